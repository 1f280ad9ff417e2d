"""Benchmark scripts (each prints its figures); importable for the pieces tests share with them."""
