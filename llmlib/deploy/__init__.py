"""Launching servers, the machine's topology, Triton."""
