"""Benchmarks, the Dataset interface and its loaders, tokenizers."""
