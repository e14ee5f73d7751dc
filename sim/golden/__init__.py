"""Bit-exact NumPy golden model of every fp8train unit (the specification the RTL is checked against)."""

from .arith import add, chunk_dot, convert, matmul, mul

__all__ = ["add", "chunk_dot", "convert", "matmul", "mul"]
