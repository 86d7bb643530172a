"""Triton Inference Server: setup from nvidia-pytriton and model repositories."""
