"""lowbit: low-bit neural networks on FPGAs, trained, compiled and proven bit-exact."""

__version__ = "0.1.0"
