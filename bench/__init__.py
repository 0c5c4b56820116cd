"""Benchmarks (not tests): each prints its figures and ratios against a reference."""
