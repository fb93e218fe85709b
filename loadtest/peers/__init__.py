"""Peers the benchmark compares Triton with (servers a user would otherwise pick)."""
