"""Benchmarks behind ``mango bench``: ratios against baselines measured in the same process."""
