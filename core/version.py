"""The version of lowbit, written into every manifest and checkpoint."""

__version__ = "0.1.0"
