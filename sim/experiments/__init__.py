"""Numerical experiments run through the golden model (``fp8train experiment ...``)."""
