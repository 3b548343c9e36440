"""Shared helpers for the hardware component tests."""

import gc
import re
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable


def raises_exactly(exc, message, build):
    """``build()`` raises ``exc`` with exactly ``message``; the half-built component is not reported unused."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(exc, match=f"^{re.escape(message)}$") as info:
            build()
        del info
        gc.collect()


from lowbit.hw.unused import unelaborated  # noqa: E402,F401  (re-exported for the tests)
