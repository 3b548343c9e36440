"""Resource, throughput and fmax estimates for a compiled network, calibrated against Yosys.

The report: an engine's estimate from its features (:mod:`lowbit.boards.features`) and the
fitted coefficients (:mod:`lowbit.boards.fit`), and a network's against a board. Each kind of
engine prices itself in its op's module (``lowbit.compiler.ops``); what the kinds compute is:

Per engine (one matrix-vector-threshold unit, see :mod:`lowbit.hw.mvau`) and per family:

- **BRAM** follows the rule Yosys' ``memory_libmap`` applies to each ROM (weights, thresholds): a
  ROM becomes block RAM when its soft-logic cost, ``bits / 16`` (the pass's default ROM cost per
  bit), exceeds the cost of the fewest block RAMs that hold it
  (:data:`lowbit.hw.fabric.BRAM_SHAPES`, cost :data:`lowbit.hw.fabric.BRAM_COST` per primitive,
  in the family's counting unit). The cost constants were
  bracketed by synthesizing lone ROMs of many shapes and by every engine of the calibration
  sweep (on ECP5 no constant fits every engine; see ``BRAM_COST``). Memories with a write
  port (window lines, FIFOs) sit in distributed RAM on xc7 and ECP5, and in block RAM on iCE40
  once they are large enough (:func:`lowbit.hw.fabric.ram_brams`).
- **LUTs and FFs** of a matrix-vector unit are counted by its parts, as synthesis maps them. The
  unit reads its weights and thresholds from ROM modules and puts each PE row (lane,
  accumulator, compares) in a module of its own (:mod:`lowbit.hw.rom`, :mod:`lowbit.hw.mvau`);
  the xc7 flow keeps those modules apart (``lowbit.boards.synth.KEEP_MODULES``), so an engine's
  LUTs there are the sum of three parts that synthesis counts separately (and the sweep records,
  :func:`lowbit.boards.calibrate.lut_parts`):

  - *ROMs*, counted from the structure: a ROM's distinct bits (:func:`lowbit.hw.fabric.distinct_columns`; a
    shallow ROM's bits share the few functions of its address) times the LUTs per bit that lone
    ROMs of its depth take (:func:`lowbit.hw.fabric.rom_luts`, measured by the sweep's lone ROMs); a threshold
    ROM, whose sorted, narrow words repeat their high bits, at the fitted fraction
    ``threshold_rom_scale`` of that.
  - *PE rows* (``row:`` features, times PE): per lane variant (lane, input kind, constant
    weights, DSP use) the bits that enter its compressor tree (``SIMD`` times the term width:
    the input, the input times a weight, or the shifted input), the product bits of multiplying
    lanes, the tree's counters as the lane builds them (:func:`lowbit.hw.lanes.lane_counters`)
    and a per-row constant; then the accumulator, the threshold compares by where the
    thresholds come from (constants with one neuron fold, a ROM, or a ROM of at most four words
    that a flattened design folds into the compare), the count of several levels, and the dot
    product's offset adder of the XNOR lane.
  - *The rest* of the unit: the input-slice multiplexer (``SIMD * in_bits`` times the LUTs of an
    SF:1 multiplexer, :func:`lowbit.hw.fabric.mux_luts`), the output beat's writes at each neuron fold and their
    enables, the fold counters; and, where the rows are not modules (fully unrolled units, whose
    constant weights stay in one module for synthesis to share), the rows' own features
    (``flat:``).

  iCE40 and ECP5 flatten everything, so there the same features are fitted to the engine's
  total, ROMs left in logic priced by their depth against the LUT's inputs
  (:func:`lowbit.hw.fabric.rom_depth_class`). The coefficients are fitted by non-negative least squares on
  relative error to the calibration sweep (:mod:`lowbit.boards.calibrate`, :mod:`lowbit.boards.fit`),
  each part's to that part's count, and stored in ``calibration.json`` beside the data they were fitted to.
- **DSPs**: multiplying lanes (``lut-multiply``) use one DSP per multiplier where Yosys maps
  them so: on xc7 a DSP48E1 once its operands are 10 bits together, on ECP5 a MULT18X18D for every
  multiplier, on iCE40 none; other lanes use none.
- **Level-table lanes** (post-training quantized layers, ``table:c_1,..,c_K``) select one of the
  products ``c_k * x`` by a sign and magnitude code, as the shift lane selects a shifted input, so
  they take the shift lane's calibrated features (on bipolar inputs, where each product is a
  constant ±c, the multiplying lane's), with the weight as wide as its largest magnitude. The
  products themselves, which the shift lane does not have, are priced by
  :func:`lowbit.compiler.ops.matmul.table_product_luts`: a lookup per output bit where the input element and the magnitude
  code fit a LUT or two, else their shift-add chains at one LUT per adder bit (a ripple adder
  bit is one LUT and a carry-chain cell on xc7, iCE40 and ECP5); a structural count, not a
  fitted coefficient.
- **Window, pool, collect, normalize-sign and FIFO engines** have their own features, each op
  with its own constant: row/column counters and line-memory pointers, the pad multiplexer, line
  memories (xc7: distributed RAM, counted as LUT sites by :func:`lowbit.hw.fabric.lutram_luts`; ECP5:
  distributed RAM, not in its LUT count, read through a multiplexer over 16-word banks; iCE40:
  flip-flops or block RAM), OR or compare trees of the pool (an integer compare and select
  priced per element width, which synthesis maps unevenly), the collect's per-beat write
  enables, for normalize-sign the fold multiplexers (about a LUT per held element bit), the
  sum chain and the PE compares with their per-fold offsets, and for FIFOs their pointers and
  queue. A network's estimate adds its stream FIFOs.
- **Cycles** are exact: the manifest's ``cycles_per_item`` and ``latency`` (from the engines'
  timing properties).
- **fmax**: nextpnr's critical path on a placed network runs from the last engine's output
  handshake back through every engine's stall logic (``advance``) into the first engine's
  compressor tree and accumulator. The model counts LUT levels on that path,
  ``n_engines + tree_levels + acc_bits / 2``, at ``t_lut`` each plus ``t0``
  (:data:`FMAX_DELAYS_NS`). iCE40's delays are matched to one placed iCEBreaker design (three
  engines, 20.8 MHz); ECP5's are fitted to three placed ULX3S networks (within 9 % of nextpnr on
  each); xc7's are scaled from iCE40 by the families' LUT speed and are not calibrated (no open
  place and route for xc7 exists). A pipelined network has no such path: its estimate is the
  family's placed figure for pipelined networks (:data:`PIPELINED_FMAX_MHZ`, and
  :data:`PIPELINED_SCAN_FMAX_MHZ` for one with window scans).
"""

from lowbit.compiler.ir import engine_kind
from lowbit.compiler.ops.fifo import Fifo
from lowbit.core.errors import LowbitError
from lowbit.core.resources import Resources
from lowbit.hw.fabric import FAMILIES

from .boards import get_board
from .features import PARTS
from .fit import load_models

__all__ = ["estimate_layer", "estimate_manifest", "FMAX_DELAYS_NS", "PIPELINED_FMAX_MHZ", "PIPELINED_SCAN_FMAX_MHZ",
           "estimate_fmax_mhz"]

# Critical path delays in ns: clock-to-out plus setup (t0), and one LUT level with its routing.
# iCE40: matched to one placed iCEBreaker network. ECP5: fitted (least squares on the period, t0
# fixed at 0.5 ns) to three placed ULX3S networks of 2, 2 and 3 engines (nextpnr-ecp5, 25 MHz
# constraint; see the estimator benchmark). xc7: scaled from iCE40 by LUT speed, a model only (no
# open xc7 place and route exists).
FMAX_DELAYS_NS = {"ice40": (3.2, 4.5), "ecp5": (0.5, 2.15), "xilinx": (1.0, 0.9)}
# A network whose engines are all pipelined (lowbit compile --pipeline) has no stall path through
# its engines, and its placed fmax was flat across the rows of the timing benchmark at one and two
# counter levels between registers: ECP5 152 to 200 MHz over five ULX3S networks, modelled as their
# geometric middle (within 15 % of each, and of the 154 to 199 MHz of the six MLP rows since); iCE40
# the iCEBreaker row with its weights in LUTs (56.1 MHz; 61.1 with its first layer's in block
# RAM, a choice the estimate does not see). More levels between
# registers lengthen a stage: beyond two, the period grows in proportion (an extrapolation, not
# measured). xc7: ECP5's figure, not calibrated (no open place and route exists for xc7).
PIPELINED_FMAX_MHZ = {"ecp5": 174.3, "ice40": 56.1, "xilinx": 174.3}
# A pipelined network with window scans, pools and a collect (a CNN) places slower: its critical
# paths are the stall logic of a scan and the enables of its wide registers and FIFO memories,
# each a few gates from registers but with a large fanout. ECP5: the one placed Fashion-MNIST CNN
# of the timing benchmark, the middle of its three nextpnr seeds (in-sample; 143.1, 147.9 and
# 149.7 MHz, each seed's critical path another: a window's line memory, a FIFO's write enable,
# the output handshake); iCE40 and xc7 scaled from their MLP figures by ECP5's ratio (a model,
# not measured).
PIPELINED_SCAN_FMAX_MHZ = {family: round(mhz * 147.9 / 174.3, 1) for family, mhz in PIPELINED_FMAX_MHZ.items()}


def estimate_fmax_mhz(layers, family):
    """Estimated fmax of a network of ``layers`` (manifest layer dicts), see :data:`FMAX_DELAYS_NS`,
    :data:`PIPELINED_FMAX_MHZ` and :data:`PIPELINED_SCAN_FMAX_MHZ`."""
    if all(layer.get("pipeline") for layer in layers):
        scans = any(layer["op"] != "mvau" for layer in layers)
        fmax = (PIPELINED_SCAN_FMAX_MHZ if scans else PIPELINED_FMAX_MHZ)[family]
        return fmax * min(1.0, 2 / max(layer["pipeline"] for layer in layers))
    t0, t_lut = FMAX_DELAYS_NS[family]
    levels = len(layers) + max(engine_kind(layer.get("op")).path_levels(layer, family) for layer in layers)
    return 1e3 / (t0 + t_lut * levels)


def _uncalibrated(feats, model):
    """Feature names that ``layer`` uses but the family's model was never fitted on."""
    return [n for n, v in feats.items() if v and n not in model]


def estimate_layer(layer, family, models=None):
    """LUT, FF, BRAM and DSP estimate of one engine (a manifest layer dict) on ``family``."""
    if family not in FAMILIES:
        raise LowbitError(f"no estimator for family {family!r}", "families: xilinx, ice40, ecp5")
    models = models if models is not None else load_models()
    kind = engine_kind(layer.get("op"))
    fixed = kind.fixed_cost(layer, family, lambda entry: estimate_layer(entry, family, models))
    if fixed is not None:
        resources, parts = fixed
        return {**resources, "fmax_mhz": min([estimate_fmax_mhz([layer], family)]
                                              + [p["fmax_mhz"] for p in parts])}
    model = models[family]
    lut_feats, ff_feats = kind.cost_features(layer, family)
    if any(n.startswith("flat:") and v and n not in model["luts"] for n, v in lut_feats.items()):
        # Constant (fully unrolled) weights only simplify the rows; where such a lane was not
        # calibrated, the rows with their weights in a ROM are the estimate (an upper bound).
        lut_feats = {(n.replace("flat:", "row:", 1).replace("-const", "") if n.startswith("flat:") else n): v
                     for n, v in lut_feats.items()}
    missing = _uncalibrated(lut_feats, model["luts"])
    if missing:
        lanes = [n.split("lane:", 1)[1] for n in missing if "lane:" in n]
        what = lanes[0] if lanes else kind.engine_op
        raise LowbitError(f"the estimator is not calibrated for {what!r} on {family}",
                          "add an engine of that kind to the sweep in boards/calibrate.py and "
                          "regenerate with 'python -m benchmarks.estimator --write'")
    # The LUTs of each part of the engine: what the structure counts, then the PE rows' features
    # and the rest's.
    parts = kind.structural_luts(layer, family, model)
    for n, c in model["luts"].items():
        parts["rows" if n.startswith("row:") else "glue"] += c * lut_feats.get(n, 0.0)
    if family != "xilinx" or not kind.separate_rows(layer):
        # Only the xc7 flow keeps the rows apart; elsewhere they are part of one module.
        parts = {"rom": parts["rom"], "rows": 0.0, "glue": parts["rows"] + parts["glue"]}
    luts = sum(parts[part] for part in PARTS)
    ffs = sum(c * ff_feats.get(n, 0.0) for n, c in model["ffs"].items())
    return {"luts": int(round(luts)), "ffs": int(round(ffs)), "brams": kind.brams(layer, family),
            "dsps": kind.dsps(layer, family),
            "fmax_mhz": estimate_fmax_mhz([layer], family),
            "lut_parts": {part: round(parts[part], 1) for part in PARTS}}


def estimate_manifest(manifest, board_name, models=None):
    """Per-layer and total estimates of a build's manifest on a board, against its capacity.

    Returns
    -------
    dict
        ``board``, ``family``, ``layers`` (name, folding, cycles, luts, ffs, brams, dsps, fmax),
        ``total``, ``capacity``, ``fits`` (bool), ``over`` (resource -> amount over capacity),
        ``utilization`` (resource -> fraction), ``cycles_per_inference``, ``latency_cycles``,
        ``fmax_mhz`` (the network's), ``clock_mhz`` (board oscillator), and inferences/s and
        latency in microseconds at both clocks.
    """
    board = get_board(board_name)
    models = models if models is not None else load_models()
    rows = []
    for layer in manifest["layers"]:
        est = estimate_layer(layer, board.family, models)
        kind = engine_kind(layer.get("op"))
        rows.append({"name": layer.get("name", "?"), "op": kind.engine_op, **kind.summary(layer),
                     "cycles": layer["cycles_per_item"],
                     "cycles_per_inference": layer.get("cycles_per_inference",
                                                       layer["cycles_per_item"]), **est})
        # The stream FIFOs the compiler put after this layer.
        for fifo in manifest.get("fifos", []):
            if fifo["after"] == layer.get("name"):
                entry = Fifo.cost_entry(fifo)
                rows.append({"name": f"{fifo['after']}.fifo", "op": Fifo.engine_op, **Fifo.summary(entry),
                             "cycles": 1, "cycles_per_inference": "-",
                             **estimate_layer(entry, board.family, models)})
    total, capacity = Resources.total(rows), board.capacity()
    cycles = manifest["cycles_per_inference"]
    latency = manifest["latency_cycles"]
    fmax = estimate_fmax_mhz(manifest["layers"], board.family)
    clock = board.clock_hz / 1e6
    return {
        "board": board.name, "family": board.family, "device": board.device,
        "layers": rows, "total": total.as_dict(), "capacity": capacity.as_dict(),
        "utilization": total.utilization(capacity),
        "fits": total.fits(capacity), "over": total.over(capacity),
        "cycles_per_inference": cycles, "latency_cycles": latency,
        "fmax_mhz": fmax, "clock_mhz": clock,
        "inferences_per_second_at_fmax": fmax * 1e6 / cycles,
        # A network with window scans overlaps images and has no single latency.
        "latency_us_at_fmax": latency / fmax if latency is not None else None,
        "inferences_per_second_at_clock": clock * 1e6 / cycles,
        "latency_us_at_clock": latency / clock if latency is not None else None,
    }
