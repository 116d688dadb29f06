"""Benchmarks that run the real driver and the real juicefs client, so the numbers in docs/ can be reproduced."""
