"""The features the estimator prices an engine by, from its manifest entry.

Each kind of engine names its own LUT and FF features (its module's ``cost_features``, found
through :func:`lowbit.compiler.ir.engine_kind`); the calibration fits one coefficient per name
(:mod:`lowbit.boards.fit`). What the structure counts exactly (ROMs mapped on their own,
distributed RAM, constant products) is not fitted: :func:`structural_luts`.
"""

from lowbit.compiler.ir import engine_kind

__all__ = ["layer_features", "structural_luts", "PARTS"]

# The parts synthesis counts apart on xc7 (``lowbit.boards.calibrate.lut_parts``): ROM modules,
# a matrix-vector unit's PE row modules, and the rest.
PARTS = ("rom", "rows", "glue")


def layer_features(layer, family):
    """The named LUT features and FF features of one engine (a manifest layer), as two dicts."""
    return engine_kind(layer.get("op")).cost_features(layer, family)


def structural_luts(layer, family, model=None, part=None):
    """LUTs that the estimator counts from the structure, not from fitted coefficients (each
    kind's ``structural_luts``; ``model`` is the family's fitted model, whose ROM table prices
    ROMs). ``part`` (one of :data:`PARTS`) counts that part alone."""
    parts = engine_kind(layer.get("op")).structural_luts(layer, family, model or {})
    return parts[part] if part else sum(parts.values())
