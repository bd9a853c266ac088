"""Optimizers that replace or wrap Adam: TRAC (parameter-free scaling) and PSGD-Kron."""
