"""Benchmarks: each measures our code beside its floor in the same run and reports the ratio."""
