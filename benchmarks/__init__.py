"""Benchmarks of jobqueue against a real PostgreSQL (run ``python -m benchmarks.queue_bench``)."""
