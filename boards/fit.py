"""Fitting the estimator to the calibration sweep, and loading what was fitted.

Per family, the LUT and FF coefficients of every feature (:mod:`lowbit.boards.features`) are fitted
by non-negative least squares on relative error to the Yosys counts of the sweep
(:mod:`lowbit.boards.calibrate`), and each engine kind fits what else it needs (the lone ROM its
table of LUTs per ROM bit, the matrix-vector unit its threshold ROM scale). The result is stored
in ``calibration.json`` beside the rows it was fitted to.
"""

import json
import math
from pathlib import Path

import numpy as np

from lowbit.compiler.ir import ENGINE_KINDS, engine_kind
from lowbit.core.errors import LowbitError
from lowbit.core.schema import FINITE, Check, Record, mapping_of, validate
from lowbit.hw.fabric import FAMILIES

from .calibrate import CALIBRATION_PATH
from .features import layer_features, structural_luts

__all__ = ["fit_models", "load_models"]


def _fit(feats, counts, totals=None):
    """Non-negative coefficients over the union of ``feats``' names, on relative error (of
    ``totals``, the whole counts, where ``counts`` are what the features must explain)."""
    names = sorted({n for f in feats for n in f})
    a = np.array([[f.get(n, 0.0) for n in names] for f in feats], dtype=float)
    y = np.array(counts, dtype=float)
    w = np.array(totals if totals is not None else counts, dtype=float)
    from scipy.optimize import nnls  # a heavy import, needed only to fit

    # Each row divided by its engine's count, so small engines weigh as much as large ones.
    coef = nnls(a / w[:, None], y / w)[0]
    return {n: float(c) for n, c in zip(names, coef)}


def fit_models(rows):
    """Fit the per-family LUT and FF coefficients to calibration rows (see ``calibrate.run_sweep``).

    The LUT coefficients explain what :func:`~lowbit.boards.features.structural_luts` does not
    already count. Where the flow keeps a unit's ROMs and PE rows apart (xc7), synthesis counts
    each part, and each part is fitted to its own count: the ``row:`` coefficients to the rows'
    LUTs, the others to the rest of the engine; elsewhere every coefficient is fitted to the
    engine's total."""
    models = {}
    for family in sorted({r["family"] for r in rows}):
        fam_rows = [r for r in rows if r["family"] == family]
        model = {}
        for kind in ENGINE_KINDS.values():  # the lone ROM's table first: it prices the others' ROMs
            model.update(kind.fit(fam_rows, family, model))
        ff_feats = [layer_features(r["layer"], family)[1] for r in fam_rows]
        # Engines that are all structure give their kind's fit, not LUT coefficients.
        fit_rows = [r for r in fam_rows if not engine_kind(r["layer"].get("op")).priced_by_structure]
        lut_feats = [layer_features(r["layer"], family)[0] for r in fit_rows]
        totals = [max(r["luts"], 1) for r in fit_rows]
        if not any(r.get("lut_parts", {}).get("rows") for r in fit_rows):
            fitted = [max(r["luts"] - structural_luts(r["layer"], family, model), 1) for r in fit_rows]
            luts = _fit(lut_feats, fitted, totals)
        else:
            luts = {}
            for part in ("rows", "glue"):
                feats, counts, weights = [], [], []
                for r, f, total in zip(fit_rows, lut_feats, totals):
                    f = {n: v for n, v in f.items() if n.startswith("row:") == (part == "rows")}
                    if any(f.values()):
                        feats.append(f)
                        counts.append(max(r["lut_parts"][part]
                                          - structural_luts(r["layer"], family, model, part=part), 0))
                        weights.append(total)
                luts.update(_fit(feats, counts, weights))
        models[family] = {"luts": luts, "ffs": _fit(ff_feats, [max(r["ffs"], 1) for r in fam_rows]),
                          **model}
    return models


_FIX = "regenerate it with 'python -m benchmarks.estimator --write'"
_COEFFICIENTS = mapping_of(Check("a finite non-negative number",
                                 lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v >= 0))
_MODEL = Record({"luts": _COEFFICIENTS, "ffs": _COEFFICIENTS, "rom_luts_per_bit": _COEFFICIENTS,
                 "threshold_rom_scale": FINITE})
CALIBRATION = Record({"models": Record({family: _MODEL for family in FAMILIES})})


def load_models(path=CALIBRATION_PATH):
    """The fitted coefficients recorded in ``calibration.json``, checked."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        raise LowbitError(f"the estimator's calibration {str(path)!r} is missing or damaged", _FIX) from None
    return validate(data, CALIBRATION, what=f"the estimator's calibration {str(path)!r}", fix=_FIX)["models"]
