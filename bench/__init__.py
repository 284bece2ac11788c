"""Benchmarks of the serving and batch-scoring speed targets (`python -m bench.run`)."""
