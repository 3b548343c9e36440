"""Components built only to read their properties (cycles, formats, memory sizes).

Amaranth warns when an elaboratable is garbage-collected without being elaborated, which is the
right default for hardware that was meant to be used. The compiler's searches build many
candidate engines just to estimate them; those are marked here so the warning keeps its meaning.
"""

__all__ = ["unelaborated"]


def unelaborated(component):
    """Mark ``component`` (and, for a network top, its engines) as intentionally not elaborated."""
    component._MustUse__silence = True
    for engine in getattr(component, "engines", ()):
        engine._MustUse__silence = True
    return component
