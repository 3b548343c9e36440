"""The critical path of a placed clock domain, named in the network's own terms.

nextpnr's JSON report lists, for each pair of clock edges, its slowest path as segments from cell
to cell. Cells are named after the nets Yosys kept, with what packing added behind them
(``link.network.network.engine0.pe0_row.x_SB_DFFESR_Q_14_D_SB_LUT4_O_LC``); this module reads the
path of one clock net and names its start and end by engine, layer and signal
(``engine0 (fc0): pe0_row.x``), so a missed clock says where to pipeline or fold.
"""

import json
import re

from lowbit.core.errors import LowbitError

__all__ = ["critical_path", "engine_names", "signal_of_cell"]

# What packing appends to the name of the net a cell drives: iCE40 ``_SB_DFFESR_Q_3``,
# ``_SB_LUT4_O_LC``, ``_DFFLC``, ECP5 ``_TRELLIS_FF_Q_4``, a distributed RAM's ``$DPRAM_COMB1``.
_PACKING = re.compile(r"(_SB_[A-Z0-9]+|_TRELLIS_[A-Z0-9]+|_DFFLC|_LC|\$DPRAM|_CCU2C|_LUT4)(\b|_|$).*$")
# A network's engines are the submodules ``engine<k>`` of its top (lowbit.hw.network).
_ENGINE = re.compile(r"(?:^|\.)engine(\d+)\.(.+)$")


def engine_names(manifest):
    """The layer name of each engine of a build, in the order of the network's ``engine<k>``
    submodules: each computing layer, then the stream FIFOs placed after it."""
    names = []
    for layer in manifest["layers"]:
        names.append(layer["name"])
        names += [f"FIFO after {layer['name']}" for f in manifest.get("fifos", ()) if f["after"] == layer["name"]]
    return names


def signal_of_cell(cell, engines=()):
    """A readable name for a placed cell: ``engine<k> (layer): signal`` inside the network, else
    the board top's own hierarchical signal (``link.streamer_state``)."""
    name = _PACKING.sub("", cell.lstrip("\\")) or cell
    m = _ENGINE.search(name)
    if m is None:
        return name
    k, signal = int(m.group(1)), m.group(2)
    layer = f" ({engines[k]})" if k < len(engines) else ""
    return f"engine{k}{layer}: {signal}"


def critical_path(report_path, net, engines=()):
    """The slowest register-to-register path of clock ``net`` in nextpnr's JSON report.

    Returns a dict: ``start`` and ``end`` (readable names, see :func:`signal_of_cell`),
    ``start_cell`` and ``end_cell`` (the placed cells), ``delay_ns`` (the sum of its segments)
    and ``segments``; None if the report lists no path within that clock.

    Raises
    ------
    LowbitError
        If the report cannot be read as nextpnr's.
    """
    try:
        paths = json.loads(open(report_path, encoding="utf-8").read()).get("critical_paths", [])
        edge = f"posedge {net}"
        within = [p for p in paths if p.get("from") == edge and p.get("to") == edge]
        if not within:
            return None
        segments = within[0]["path"]
        start, end = segments[0]["from"]["cell"], segments[-1]["to"]["cell"]
        delay = sum(float(s["delay"]) for s in segments)
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise LowbitError(f"cannot read the critical path of {net!r} from nextpnr's report {str(report_path)!r}: {e}",
                          "build again; the report is rewritten") from None
    return {"start": signal_of_cell(start, engines), "end": signal_of_cell(end, engines),
            "start_cell": start, "end_cell": end, "delay_ns": delay, "segments": len(segments)}
