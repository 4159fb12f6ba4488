"""Benchmarks of baqup-agent against peers measured in the same run (`make bench`)."""
