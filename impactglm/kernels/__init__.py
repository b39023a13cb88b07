"""Numba kernels, each with a NumPy twin named <name>_numpy (tests compare them)."""
