"""Stream testbench: Amaranth stream components in Verilator under cocotb, with random stalls."""

import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from amaranth import Module, Signal, unsigned
from amaranth.back import verilog
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from lowbit.core.errors import LowbitError
from lowbit.sim import build, toolchain
from lowbit.sim.runner import Phase, StallConfig, run_phases, run_stream


class AddMul(wiring.Component):
    """``o = ((i + 3) * 5) mod 2**out_width``, a two-stage pipeline that stalls as a whole.

    ``i.ready`` is ``~o.valid | o.ready``: it depends combinationally on ``o.ready``.

    Latency: 2 cycles. Interval: 1 cycle.

    Members
    -------
    i : In(stream.Signature(unsigned(in_width)))
    o : Out(stream.Signature(unsigned(out_width)))
    """

    def __init__(self, in_width, out_width):
        self._in_width = in_width
        self._out_width = out_width
        super().__init__({"i": In(stream.Signature(unsigned(in_width))),
                          "o": Out(stream.Signature(unsigned(out_width)))})

    latency = property(lambda self: 2)
    interval = property(lambda self: 1)

    def reference(self, word):
        return (word + 3) * 5 % 2 ** self._out_width

    def elaborate(self, platform):
        m = Module()
        v1 = Signal()
        d1 = Signal(self._in_width + 1)
        advance = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(advance)
        with m.If(advance):
            m.d.sync += [v1.eq(self.i.valid), d1.eq(self.i.payload + 3),
                         self.o.valid.eq(v1), self.o.payload.eq(d1 * 5)]
        return m


class Slow(wiring.Component):
    """``o = (7 * i + 1) mod 2**width``, one item at a time, ``cycles`` cycles per item.

    ``i.ready`` is high for one cycle in ``cycles`` (when idle, or when the result leaves), so it
    toggles and depends combinationally on ``o.ready``.

    Latency: ``cycles``. Interval: ``cycles``.

    Members
    -------
    i : In(stream.Signature(unsigned(width)))
    o : Out(stream.Signature(unsigned(width)))
    """

    def __init__(self, width, cycles):
        self._width = width
        self._cycles = cycles
        super().__init__({"i": In(stream.Signature(unsigned(width))),
                          "o": Out(stream.Signature(unsigned(width)))})

    latency = property(lambda self: self._cycles)
    interval = property(lambda self: self._cycles)

    def reference(self, word):
        return (7 * word + 1) % 2 ** self._width

    def elaborate(self, platform):
        m = Module()
        busy = Signal()
        count = Signal(range(self._cycles + 1))
        data = Signal(self._width)
        m.d.comb += [self.o.payload.eq(data),
                     self.i.ready.eq(~busy & ~self.o.valid | self.o.valid & self.o.ready)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(busy):
            m.d.sync += count.eq(count - 1)
            with m.If(count == 1):
                m.d.sync += [busy.eq(0), self.o.valid.eq(1)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += data.eq(self.i.payload * 7 + 1)
            if self._cycles == 1:
                m.d.sync += self.o.valid.eq(1)
            else:
                m.d.sync += [busy.eq(1), count.eq(self._cycles - 1)]
        return m


class Invert(wiring.Component):
    """``o = ~i``, combinational: ``o.valid`` is ``i.valid`` and ``i.ready`` is ``o.ready``.

    Latency: 0 cycles. Interval: 1 cycle. Amaranth emits no ``clk`` or ``rst`` for it.

    Members
    -------
    i : In(stream.Signature(unsigned(width)))
    o : Out(stream.Signature(unsigned(width)))
    """

    def __init__(self, width):
        self._width = width
        super().__init__({"i": In(stream.Signature(unsigned(width))),
                          "o": Out(stream.Signature(unsigned(width)))})

    latency = property(lambda self: 0)
    interval = property(lambda self: 1)

    def reference(self, word):
        return word ^ (2 ** self._width - 1)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.o.valid.eq(self.i.valid), self.o.payload.eq(~self.i.payload),
                     self.i.ready.eq(self.o.ready)]
        return m


def _verilog(component):
    return verilog.convert(component, name="top", emit_src=False)


def _vectors(component, width, n, seed):
    rng = random.Random(seed)
    inputs = [rng.getrandbits(width) for _ in range(n)]
    return inputs, [component.reference(x) for x in inputs]


@pytest.fixture(scope="module")
def wide():
    """AddMul with a 200-bit input and a 130-bit output, built once for the module."""
    component = AddMul(200, 130)
    text = _verilog(component)
    sim = build.build_simulation(text, "top")
    print(f"build: {sim.build_seconds:.1f} s, cached {sim.cached}")
    return component, text


@pytest.fixture(scope="module")
def slow3():
    component = Slow(8, 3)
    return component, _verilog(component)


NO_ICARUS = "Icarus Verilog (iverilog) is not on PATH"


@pytest.mark.parametrize("simulator", [
    "verilator",
    pytest.param("icarus", marks=pytest.mark.skipif(shutil.which("iverilog") is None,
                                                    reason=NO_ICARUS))])
def test_wide_stream_with_stalls_is_exact(wide, simulator):
    component, text = wide
    inputs, expected = _vectors(component, 200, 2000, seed=1)
    r = run_stream(text, "top", inputs, expected, timing_items=32,
                   stall=StallConfig(in_idle=0.5, out_stall=0.5, max_gap=4), seed=3,
                   simulator=simulator)
    assert r.mismatches == 0 and r.first_mismatches == []
    # Every beat exactly once and in order: nothing lost, duplicated or reordered.
    assert r.n_inputs == 2000 and r.n_outputs == 2000
    assert r.outputs == expected
    assert r.in_idle_fraction >= 0.3 and r.out_idle_fraction >= 0.3
    assert r.latency == component.latency
    assert r.interval == [component.interval] * 31
    assert len(r.timing_input_cycles) == 32
    # The harness moves the beats: Python runs a few times per batch, not per beat or cycle.
    assert r.wakes < 20


def test_toggling_ready_with_stalls(slow3):
    component, text = slow3
    inputs, expected = _vectors(component, 8, 600, seed=2)
    r = run_stream(text, "top", inputs, expected, timing_items=10,
                   stall=StallConfig(in_idle=0.5, out_stall=0.5, max_gap=6), seed=4)
    assert r.mismatches == 0 and r.outputs == expected
    assert r.latency == component.latency
    assert r.interval == [component.interval] * 9
    assert r.timing_input_cycles[1] - r.timing_input_cycles[0] == component.interval


def test_combinational_path_without_clock():
    component = Invert(9)
    inputs, expected = _vectors(component, 9, 500, seed=10)
    r = run_stream(_verilog(component), "top", inputs, expected, timing_items=8,
                   stall=StallConfig(in_idle=0.3, out_stall=0.6, max_gap=5), seed=11)
    assert r.mismatches == 0 and r.outputs == expected
    assert r.latency == component.latency
    assert r.interval == [component.interval] * 7


def test_one_wrong_word_is_one_mismatch(wide):
    component, text = wide
    inputs, expected = _vectors(component, 200, 200, seed=5)
    expected[150] ^= 1 << 129
    r = run_stream(text, "top", inputs, expected, timing_items=8, seed=6, progress=False)
    assert (r.mismatches, r.wrong, r.missing, r.extra) == (1, 1, 0, 0)
    [m] = r.first_mismatches
    assert (m["phase"], m["kind"], m["index"]) == ("stalled", "wrong", 150)
    assert int(m["expected"], 16) == expected[150]
    assert int(m["got"], 16) == component.reference(inputs[150])


def test_missing_and_extra_beats_are_reported(wide):
    component, text = wide
    inputs, expected = _vectors(component, 200, 50, seed=7)
    r = run_stream(text, "top", inputs, expected + [123], timing_items=8, seed=8, progress=False)
    assert (r.mismatches, r.missing, r.wrong, r.extra) == (1, 1, 0, 0)
    assert r.first_mismatches[0]["kind"] == "missing"
    assert r.first_mismatches[0]["index"] == 50
    r = run_stream(text, "top", inputs, expected[:-1], timing_items=8, seed=8, progress=False)
    assert (r.mismatches, r.extra, r.wrong, r.missing) == (1, 1, 0, 0)
    assert r.first_mismatches[0]["index"] == 49


def test_idle_cycles_do_not_wake_python():
    """100 items at 10,000 cycles each: a million cycles, yet a few Python wake-ups per item."""
    component = Slow(16, 10_000)
    inputs, expected = _vectors(component, 16, 100, seed=9)
    t0 = time.perf_counter()
    r = run_stream(_verilog(component), "top", inputs, expected, timing_items=3,
                   stall=StallConfig(seed=1))
    assert r.mismatches == 0
    assert r.latency == 10_000 and r.interval == [10_000, 10_000]
    assert r.sim_cycles > 1_000_000
    assert r.wakes < 20
    assert r.seconds < 30, f"{r.sim_cycles} cycles took {r.seconds:.1f} s"
    print(f"{r.sim_cycles} cycles, {r.wakes} wakes, {r.seconds:.2f} s "
          f"(total {time.perf_counter() - t0:.1f} s)")


def test_build_is_cached(wide):
    _, text = wide
    sim = build.build_simulation(text, "top")
    assert sim.cached and sim.seconds < 1.0
    assert (sim.build_dir / "top").is_file()


def test_waves_are_a_separate_build(wide, tmp_path):
    component, text = wide
    inputs, expected = _vectors(component, 200, 20, seed=12)
    r = run_stream(text, "top", inputs, expected, timing_items=4, workdir=tmp_path, waves=True,
                   progress=False)
    assert r.mismatches == 0
    assert r.wave_file == tmp_path / "waves.fst" and r.wave_file.stat().st_size > 0
    assert build.build_simulation(text, "top", waves=True).key != \
        build.build_simulation(text, "top").key


def test_mismatch_records_a_waveform_around_it(wide, tmp_path, capsys):
    component, text = wide
    inputs, expected = _vectors(component, 200, 300, seed=13)
    expected[250] ^= 1
    r = run_stream(text, "top", inputs, expected, timing_items=4, workdir=tmp_path, seed=2)
    [m] = r.first_mismatches
    assert (m["kind"], m["index"]) == ("wrong", 250)
    lo, hi = r.wave_window
    assert lo < m["cycle"] < hi and lo > 0
    assert r.wave_file == tmp_path / "waves.fst" and r.wave_file.stat().st_size > 0
    assert f"waveform: {r.wave_file}" in capsys.readouterr().err


def _vcd_times(path):
    return [int(line[1:]) for line in path.read_text().splitlines() if line.startswith("#")]


def test_wave_window_limits_the_dump(wide, tmp_path):
    """A VCD (text) shows what the window does: nothing before its first cycle or after its last."""
    component, text = wide
    inputs, expected = _vectors(component, 200, 400, seed=14)
    job = run_phases(text, "top", [Phase("s", inputs, expected, stall=StallConfig())],
                     waves="vcd", wave_window=(300, 340), workdir=tmp_path)
    # The run ends with the window.
    assert job.phase("s")["stopped"] and job.phase("s")["wrong"] == 0
    period = 10_000  # ps
    times = _vcd_times(job.wave_file)
    assert times and min(times) >= 300 * period and max(times) <= 342 * period


def test_crashed_testbench_raises(wide):
    _, text = wide
    with pytest.raises(LowbitError, match="does not fit the 200-bit input payload"):
        run_stream(text, "top", [1 << 200], [0], timing_items=0, progress=False)


def test_missing_compiler_is_named(monkeypatch):
    real_which = shutil.which
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "g++"
                        else real_which(name, *a, **k))
    with pytest.raises(LowbitError, match=r"^g\+\+ not found on PATH") as info:
        toolchain.verilator_env()
    assert "apt-get install g++" in info.value.hint
    with pytest.raises(LowbitError, match=r"g\+\+ not found"):
        run_stream("module top; endmodule", "top", [1], [1])


def test_missing_make_is_named(monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "make"
                        else real_which(name, *a, **k))
    with pytest.raises(LowbitError, match=r"^make not found on PATH"):
        toolchain.verilator_env()


def test_bad_arguments():
    with pytest.raises(ValueError, match="Stall in_idle must be a probability"):
        StallConfig(in_idle=1.5)
    for gap in (0, 65_536, True):  # the harness draws gaps from 16 bits
        with pytest.raises(ValueError, match=f"Stall max_gap must be an integer from 1 to 65535, not {gap!r}"):
            StallConfig(max_gap=gap)
    assert StallConfig(max_gap=65_535).max_gap == 65_535
    with pytest.raises(ValueError, match=r"inputs\[1\] must be a non-negative integer"):
        run_stream("", "top", [1, -1], [1, 1])
    with pytest.raises(ValueError, match="Number of items must be a positive divisor"):
        run_stream("", "top", [1, 2, 3], [1], n_items=2)


@pytest.mark.skipif(shutil.which("iverilog") is not None, reason="Icarus Verilog is installed")
def test_missing_icarus_is_named():
    with pytest.raises(LowbitError, match=r"^iverilog not found on PATH") as info:
        run_stream(_verilog(Invert(4)), "top", [1], [14], simulator="icarus", progress=False)
    assert "simulator='verilator'" in info.value.hint


_BUILD_SCRIPT = """
import json, sys
from lowbit.sim.build import build_simulation
sim = build_simulation(open(sys.argv[1]).read(), "top", cache_dir=sys.argv[2])
print(json.dumps({"cached": sim.cached, "dir": str(sim.build_dir)}))
"""


def test_concurrent_builds_of_one_design_build_once(tmp_path):
    """Two processes ask for the same new design at once: both get it, one of them builds it."""
    cache = tmp_path / "cache"
    cache.mkdir()
    # The run-time library objects do not depend on the design; reuse them to keep this short.
    for runtime in build.cache_root().glob("runtime-*"):
        shutil.copytree(runtime, cache / runtime.name)
    source = tmp_path / "design.v"
    source.write_text(_verilog(AddMul(13, 17)))
    procs = [subprocess.Popen([sys.executable, "-c", _BUILD_SCRIPT, source, cache],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert sorted(r["cached"] for r in reports) == [False, True]
    assert reports[0]["dir"] == reports[1]["dir"]
    builds = [p for p in cache.iterdir() if p.name.startswith("top-")]
    assert [p.name for p in builds] == [Path(reports[0]["dir"]).name]
    assert not list(cache.glob("*.tmp"))


def test_per_beat_testbench_and_monitors_agree_with_the_batch_harness(wide):
    """Python driver, sink and passive monitors on the design's own ports: every word exact,
    the monitors' beats equal to what the driver sent and the sink took (checked inside the
    testbench, which fails otherwise), and the same outputs as the batch harness."""
    component, text = wide
    inputs, expected = _vectors(component, 200, 300, seed=12)
    phase = Phase("stalled", inputs, expected, stall=StallConfig(in_idle=0.5, out_stall=0.5,
                                                                  max_gap=4, seed=13))
    per_beat = run_phases(text, "top", [phase], testbench="per-beat").phase("stalled")
    batch = run_phases(text, "top", [phase]).phase("stalled")
    for r in (per_beat, batch):
        assert (r["errors"], r["wrong"], r["missing"], r["extra"]) == (0, 0, 0, 0)
        assert [int(w, 16) for w in r["outputs"]] == expected
    assert per_beat["accepted"] == len(per_beat["input_cycles"]) == 300
    # Random stalls on both sides: at least 30 % idle cycles while beats were waiting.
    assert per_beat["in_idle_cycles"] >= 0.3 * (per_beat["input_cycles"][-1] - per_beat["start_cycle"])
    assert per_beat["out_idle_cycles"] >= 0.3 * (per_beat["output_cycles"][-1] - per_beat["start_cycle"])
    # A beat leaves at least the pipeline latency after its input went in, in order.
    assert all(o - i >= component.latency
               for i, o in zip(per_beat["input_cycles"], per_beat["output_cycles"]))
    assert per_beat["output_cycles"] == sorted(set(per_beat["output_cycles"]))


def test_per_beat_scoreboard_counts_a_wrong_word(wide):
    component, text = wide
    inputs, expected = _vectors(component, 200, 40, seed=14)
    expected[17] ^= 1
    r = run_phases(text, "top", [Phase("p", inputs, expected)], testbench="per-beat").phase("p")
    assert (r["errors"], r["wrong"]) == (1, 1)
    assert r["first_mismatches"][0]["index"] == 17
    assert r["first_mismatches"][0]["cycle"] == r["output_cycles"][17]


def test_per_beat_testbench_rejects_what_it_cannot_do(wide):
    _, text = wide
    with pytest.raises(ValueError, match="Testbench must be one of 'batch', 'per-beat', not 'x'"):
        run_phases(text, "top", [Phase("p", [1], [20])], testbench="x")
    with pytest.raises(ValueError, match="per-beat testbench records no waveforms"):
        run_phases(text, "top", [Phase("p", [1], [20], max_cycles=5)], testbench="per-beat")


def test_timing_phase_of_large_items_runs_in_one_batch(wide):
    """Items of 700 beats (a 28 x 28 feature map streams about that many pixels): the 8 timed items
    are 5600 words, more than a 2048-word batch, yet no batch reload falls between them, so every
    interval between outputs is the design's own."""
    component, text = wide
    inputs, expected = _vectors(component, 200, 8 * 700, seed=15)
    r = run_stream(text, "top", inputs, expected, n_items=8, timing_items=8, stall=None, seed=16,
                   progress=False)
    assert r.mismatches == 0 and r.outputs == expected
    assert set(r.interval) == {component.interval}
