"""What the estimator asks of each kind of engine, with the answers most kinds share.

The estimator (``lowbit.boards``) reads a build's manifest, not its hardware: every question is
answered from one manifest entry (a plain dict) by the engine kind named by its ``op``. Each op
kind (:class:`lowbit.compiler.graph.Op`) and the two engine kinds that are not ops of the graph
(the stream FIFO and the calibration's lone ROM) derive from :class:`EngineCost` and override
what they have to say; the estimator loops over them through the registry
(:func:`lowbit.compiler.ir.engine_kind`) and never asks which kind an entry is.

The LUT and FF *features* of a kind are named numbers; the calibration fits one coefficient per
name to Yosys (``lowbit.boards.fit``). What the structure counts exactly (ROMs mapped on their own,
distributed RAM, constant products) is ``structural_luts``, in three parts: ``rom`` (ROM modules),
``rows`` (a matrix-vector unit's PE row modules) and ``glue`` (the rest), as the xc7 flow keeps
those modules apart (``lowbit.boards.calibrate.lut_parts``).
"""

from lowbit.core.errors import LowbitError

__all__ = ["EngineCost", "NO_PARTS", "NoEstimatorModel", "xilinx_only"]

NO_PARTS = {"rom": 0, "rows": 0, "glue": 0}


class NoEstimatorModel(LowbitError):
    """An engine kind the estimator was never given a model of: its resources are known only
    from synthesis and placement."""


class EngineCost:
    """The estimator's questions about one kind of engine; answered from a manifest entry."""

    engine_op = None  # the "op" of the kind's manifest entries
    # The kind's own fields of its manifest entries, checked when a manifest is read
    # (lowbit.core.schema: name -> schema).
    entry_fields = {}
    entry_defaults = {}  # values of entry fields that older builds do not have
    foldable = False  # carries a PE x SIMD folding (see lowbit.compiler.graph.Op)
    priced_by_structure = False  # all structure, no fitted coefficient (the lone ROM)

    @classmethod
    def cost_features(cls, entry, family):
        """``(luts, ffs)``: the named LUT and FF features of one engine on ``family``."""
        raise NoEstimatorModel(f"the estimator has no model for layer op {entry.get('op')!r}",
                               "synthesize and place it: lowbit build BUILD --board NAME")

    @classmethod
    def structural_luts(cls, entry, family, model):
        """LUTs counted from the structure, by part (``rom``, ``rows``, ``glue``); ``model`` is
        the family's fitted model (its ROM table)."""
        return dict(NO_PARTS)

    @classmethod
    def separate_rows(cls, entry):
        """Whether the engine's PE rows are modules of their own, which the xc7 flow maps apart."""
        return False

    @classmethod
    def brams(cls, entry, family):
        """Block RAM units (RAMB18 equivalents on xc7)."""
        return 0

    @classmethod
    def dsps(cls, entry, family):
        """DSP blocks."""
        return 0

    @classmethod
    def path_levels(cls, entry, family):
        """LUT levels of the engine's own part of the critical path (see the fmax model of
        ``lowbit.boards.estimate``)."""
        return 2

    @classmethod
    def summary(cls, entry):
        """``lane``, ``weight_format``, ``shape`` and ``folding`` of the engine for a report."""
        shape = entry.get("in_shape") or [entry.get("channels")]
        return {"lane": entry["op"], "weight_format": "-", "shape": "x".join(map(str, shape)),
                "folding": str(entry.get("pe", "-"))}

    @classmethod
    def fixed_cost(cls, entry, family, estimate):
        """For kinds priced by measured constants instead of fitted features: ``(resources,
        parts)``, the LUT/FF/BRAM/DSP dict and the estimates of the engines inside it
        (``estimate(entry)`` gives one); None for fitted kinds."""
        return None

    # -- the calibration sweep (``lowbit.boards.calibrate``) --------------------------------------
    @classmethod
    def sample_name(cls, spec, inp):
        """The sweep's name of the engine of ``spec`` (``inp``: its element type, e.g. ``bip``)."""
        raise NotImplementedError

    @classmethod
    def draw(cls, rng, kind, bits, size, channels):
        """The geometry of an engine drawn at random by the sweep: fields of its spec, from the
        element type, image size and channels drawn before (a kind may draw its own)."""
        raise NotImplementedError

    @classmethod
    def sample(cls, spec, seed):
        """``(engine, manifest entry)`` of the sweep's engine for ``spec``, with seeded contents."""
        raise NotImplementedError

    @classmethod
    def fit(cls, rows, family, model):
        """Parameters of the kind fitted to the calibration rows of ``family``, beyond the feature
        coefficients (``model``: what is fitted so far); merged into the family's model."""
        return {}


def xilinx_only(entry, family):
    """Refuse ``family`` unless it is xc7, for the kinds priced by constants measured there alone."""
    if family != "xilinx":
        raise LowbitError(f"the estimator is not calibrated for {entry['op']!r} on {family}",
                          "estimate residual networks for a Xilinx board (e.g. arty-a7-35)")
