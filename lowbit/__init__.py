"""lowbit: low-bit neural networks on FPGAs, trained, compiled and proven bit-exact."""

from lowbit.core.version import __version__

__all__ = ["__version__"]
