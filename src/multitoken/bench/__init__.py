"""Benchmarks: side-by-side comparisons in one run, reported as tables and JSON (ratios, not absolute times)."""
