"""Benchmarks of the harness itself: overhead, fidelity, request path cost, HTTP and Triton
clients, the soak."""
