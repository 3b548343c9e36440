"""The board link: the framed serial protocol, its host client, and the whole board top (UART,
framing, CRC, image buffers, network) in Verilator behind a socket, with faults on the wire."""

import json
import random

import numpy as np
import pytest

from lowbit.boards import protocol as p
from lowbit.boards.host import BoardClient, open_port
from lowbit.cli import main
from lowbit.compiler.build import load_build
from lowbit.core.errors import LowbitError
from lowbit.flow import board_run_problems, compile_graph, run_board
from lowbit.sim.uart_board import SimulatedBoard, undetected_faults


@pytest.fixture(scope="module")
def digits_build(digits_graph, tmp_path_factory):
    out = tmp_path_factory.mktemp("link") / "b"
    compile_graph(digits_graph[0], out, target_cycles=64)
    return out


@pytest.fixture(scope="module")
def slow_cnn_build(tmp_path_factory):
    """A fully folded random CNN, native ports: many input beats per image, and slower than the link."""
    from lowbit.compiler.folding import most_folded
    from lowbit.model.export import export_model
    from lowbit.sweep import _random_model, random_model_arch

    arch = random_model_arch("cnn:4,8:16", "ternary", in_shape=(10, 10, 1), classes=4)
    graph = export_model(_random_model(arch, seed=2))
    out = tmp_path_factory.mktemp("link") / "cnn"
    compile_graph(most_folded(graph), out, ports="native")
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, 2, size=(40, 10, 10, 1)) * 2 - 1
    return out, inputs


def test_crc_and_frames():
    assert p.crc16(b"123456789") == 0x29B1  # the CRC-16/CCITT-FALSE check value
    frame = p.encode_frame(p.IMAGE, 7, bytes(range(32)))
    assert frame[:5] == bytes([p.SYNC, p.IMAGE, 7, 32, 0]) and len(frame) == 5 + 32 + 2
    assert p.crc16(frame[1:]) == 0  # the CRC of a frame through its CRC bytes is zero
    info = p.Info(1, 3, 98, 13, 0xDEADBEEF)
    assert p.Info.decode(info.encode()) == info and len(info.encode()) == p.INFO_BYTES


def test_the_parser_finds_every_good_frame_in_a_damaged_stream():
    lengths = {p.RESULT: 4, p.ERROR: 1}
    a = p.encode_frame(p.RESULT, 1, b"\xa5\xa5\x01\x02")  # SYNC bytes inside its own payload
    b = bytearray(p.encode_frame(p.RESULT, 2, b"abcd"))
    del b[6]  # a dropped byte
    c = p.encode_frame(p.ERROR, 3, bytes([p.BAD_CRC]))
    d = bytearray(p.encode_frame(p.RESULT, 4, b"wxyz"))
    d[7] ^= 0x10  # a flipped bit
    e = p.encode_frame(p.RESULT, 5, b"\x00\x00\x00\x00")
    stream = b"\xa5\x00" + a + bytes(b) + c + bytes(d) + e
    parser = p.FrameParser(lengths)
    events = []
    for k in range(0, len(stream), 3):  # fed in small pieces, as a port returns them
        events += parser.feed(stream[k:k + 3])
    frames = [ev for ev in events if isinstance(ev, p.Frame)]
    assert [(f.kind, f.seq, f.payload) for f in frames] == \
        [(p.RESULT, 1, b"\xa5\xa5\x01\x02"), (p.ERROR, 3, bytes([p.BAD_CRC])), (p.RESULT, 5, bytes(4))]
    for f in frames:  # spans are offsets in the stream
        assert stream[f.start:f.end] == p.encode_frame(f.kind, f.seq, f.payload)
    assert any(isinstance(ev, p.Rejected) and ev.reason == "bad CRC" for ev in events)


def test_beats_pack_least_significant_bit_first():
    assert p.pack_beats([1, 0, 1, 1], 1) == b"\x0d"
    assert p.pack_beats([0x3FF, 0], 10) == b"\xff\x03\x00"
    rng = random.Random(0)
    for bits in (1, 3, 8, 13, 80):
        words = [rng.getrandbits(bits) for _ in range(7)]
        packed = p.pack_beats(words, bits)
        assert len(packed) == p.payload_bytes(7, bits) and p.unpack_beats(packed, 7, bits) == words


def test_the_hardware_crc_is_the_protocols():
    from amaranth.hdl import Module, Signal
    from amaranth.sim import Simulator

    from lowbit.boards.link import crc16_step

    crc, byte = Signal(16), Signal(8)
    m = Module()
    out = Signal(16)
    m.d.comb += out.eq(crc16_step(crc, byte))
    cases = [(random.Random(k).getrandbits(16), random.Random(-k).getrandbits(8)) for k in range(200)]
    seen = []

    async def bench(ctx):
        for c, b in cases:
            ctx.set(crc, c)
            ctx.set(byte, b)
            seen.append(ctx.get(out))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [p.crc16(bytes([b]), c) for c, b in cases]


def test_undetected_faults_are_those_inside_a_taken_frame():
    faults = [{"direction": "to_board", "span": [10, 20]}, {"direction": "to_host", "span": [5, 9]},
              {"direction": "to_host", "span": [30, 40]}]
    # the board took bytes 0..9 and 21..30; the host took [9, 20) and [39, 50)
    missed = undetected_faults(faults, [[0, 9], [21, 30]], [[9, 20], [39, 50]])
    assert missed == [faults[2]]
    assert undetected_faults(faults[:2], [[0, 9], [20, 30]], [[9, 20]]) == []
    assert undetected_faults(faults[:1], [[0, 10]], []) == faults[:1]


class _Scripted:
    """A fault source that hits every frame with the drops it is given, in order."""

    def __init__(self, drops):
        self.drops = list(drops)

    def random(self):
        return 0.0

    def choice(self, kinds):
        return "drop"

    def randrange(self, n):
        at = self.drops.pop(0)
        return at if at >= 0 else n + at


@pytest.mark.parametrize("last", [p.SYNC, p.RESULT])
def test_a_drop_that_leaves_its_frame_as_sent_is_no_fault(last):
    from lowbit.sim.uart_board_test import Wire

    # A frame whose last byte is `last`, then two whole frames. With `last` the SYNC value, dropping
    # it pulls in the next frame's SYNC; with `last` the RESULT type, dropping it and the next
    # frame's SYNC pulls in that frame's type byte. Either way the first frame arrives as sent.
    payload = next(data for data in (bytes([k, 0, 0, 0]) for k in range(256))
                   if p.encode_frame(p.RESULT, 1, data)[-1] == last)
    frames = [p.encode_frame(p.RESULT, seq, data) for seq, data in ((1, payload), (2, b"abcd"), (3, b"wxyz"))]
    wire = Wire("to_host", {p.RESULT: 4}, {p.RESULT}, ("drop",), _Scripted([-1, 0 if last == p.RESULT else 3, 5]), 1.0)
    stream = wire.deliver(b"".join(frames)) + wire.deliver(b"")
    assert len(wire.faults) == 3
    taken = [[f.start, f.end] for f in p.FrameParser({p.RESULT: 4}).feed(stream) if isinstance(f, p.Frame)]
    assert taken == [[0, len(frames[0])]]  # the first frame, as it was sent; the others lost
    faults = wire.settled()
    assert [f["seq"] for f in faults] == [2, 3] and faults[0]["span"][0] == len(frames[0])
    assert undetected_faults(faults, [], taken) == []
    # the overlap test alone would call both the first and the second fault undetected
    assert len(undetected_faults(wire.faults, [], taken)) == 2


@pytest.mark.parametrize("before", ["cut", "damaged"])
def test_a_dropped_sync_after_a_loose_sync_value_is_no_fault(before):
    from lowbit.sim.uart_board_test import Wire

    # A SYNC value in no whole frame: the first byte of a frame cut short by a reset, or the last
    # byte of a frame that lost a byte. The next frame loses its SYNC, so its receiver takes it
    # from that byte: whole and as sent, one byte early. An error frame, never damaged, follows.
    payload = next(data for data in (bytes([k, 0, 0, 0]) for k in range(256))
                   if p.encode_frame(p.RESULT, 1, data)[-1] == p.SYNC)
    first = bytes([p.SYNC]) if before == "cut" else p.encode_frame(p.RESULT, 1, payload)
    second, error = p.encode_frame(p.RESULT, 2, b"abcd"), p.encode_frame(p.ERROR, 3, b"\x01")
    drops = [0] if before == "cut" else [3, 0]
    wire = Wire("to_host", {p.RESULT: 4, p.ERROR: 1}, {p.RESULT}, ("drop",), _Scripted(drops), 1.0)
    stream = wire.deliver(first + second + error) + wire.deliver(b"")
    assert len(wire.faults) == len(drops)
    taken = [[f.start, f.end] for f in p.FrameParser({p.RESULT: 4, p.ERROR: 1}).feed(stream) if isinstance(f, p.Frame)]
    start = len(stream) - len(second) - len(error)  # the second frame, from the loose SYNC value
    assert taken == [[start, start + len(second)], [start + len(second), len(stream)]]
    assert stream[start:start + len(second)] == second
    faults = wire.settled()
    if before == "cut":
        assert faults == []
    else:  # the first frame's damage ends where the second frame now starts
        assert [f["seq"] for f in faults] == [1] and faults[0]["span"] == [0, start]
    assert undetected_faults(faults, [], taken) == []
    assert len(undetected_faults(wire.faults, [], taken)) == len(drops)  # the overlap test alone


def test_the_whole_digits_test_set_through_the_simulated_board(digits_build):
    r = run_board(digits_build, sim=True, progress=False)
    assert r["images"] == 360 and r["mismatches"] == 0 and r["wrong_results_accepted"] == 0
    assert r["hw_accuracy"] == r["ir_accuracy"] > 0.8
    assert r["link_events"] == {}  # a clean line: no error, no retry, no rejected byte
    assert r["faults_injected"] == 0 and r["board_resets"] == 0
    assert r["image_bytes"] == 32 and r["result_bytes"] == 10  # 256 input bits, 10 x 8 result bits
    # every byte of every frame crossed the simulated line: 39-byte image and 17-byte result frames
    assert r["bytes_to_board"] == 360 * 39 + 7 and r["bytes_to_host"] == 360 * 17 + 17
    assert board_run_problems(r) == []


def test_every_fault_on_the_wire_is_detected_and_recovered(digits_build):
    r = run_board(digits_build, sim=True, limit=150, fault_rate=0.3, seed=3, divisor=4, progress=False)
    assert r["mismatches"] == 0 and r["wrong_results_accepted"] == 0 and r["images"] == 150
    assert r["hw_accuracy"] == r["ir_accuracy"]
    kinds = r["faults_by_kind"]
    assert set(kinds) == {"flip to board", "drop to board", "reset to board", "flip to host", "drop to host"}
    assert r["faults_injected"] >= 60 and r["faults_detected"] == r["faults_injected"], r["undetected_faults"]
    assert r["board_resets"] == kinds["reset to board"]
    events = r["link_events"]
    assert events["error answers (bad CRC)"] > 0 and events["rejected (bad CRC)"] > 0
    assert events["sent again (a later result came first)"] > 0


def test_a_slow_network_answers_busy_beyond_its_buffers_and_never_hangs(slow_cnn_build):
    # Native ports, 100 one-bit input beats per image, and a network slower than the link: with
    # eight images in flight the board runs out of buffers and says so.
    build_dir, inputs = slow_cnn_build
    build = load_build(build_dir)
    assert build.manifest["beats_per_inference"] == 100 and build.ports == "native"
    graph = build.graph()
    from lowbit.hw.payload import VectorFormat

    in_fmt = VectorFormat(**build.manifest["ports"]["i"]["format"])
    out_fmt = VectorFormat(**build.manifest["ports"]["o"]["format"])
    beats = in_fmt.pack(inputs.reshape(-1, in_fmt.count))
    expected = out_fmt.pack(graph.hardware_output(inputs))
    payloads = [p.pack_beats(beats[k * 100:(k + 1) * 100], 1) for k in range(len(inputs))]
    frame_cycles = (len(payloads[0]) + 7) * 10 * 4
    assert build.manifest["cycles_per_inference"] > frame_cycles
    with SimulatedBoard(build, divisor=4) as board:
        port = open_port(board.url, 115200)
        client = BoardClient(port, result_bytes=p.payload_bytes(1, out_fmt.width))
        assert client.info().window == p.WINDOW
        record = client.run(payloads, window=8)
        port.close()
        board.finish()
    assert [p.unpack_beats(r, 1, out_fmt.width)[0] for r in record.results] == expected
    assert record.events["error answers (busy)"] > 0


def test_the_board_top_within_its_window_is_never_busy(slow_cnn_build):
    build_dir, inputs = slow_cnn_build
    r = run_board(build_dir, sim=True, inputs=inputs, divisor=4, progress=False)
    assert r["images"] == 40 and r["mismatches"] == 0 and r["window"] == p.WINDOW
    assert r["link_events"] == {} and r["hw_accuracy"] is None


# The network on its own clock, as on a board with a PLL: every byte crosses between the oscillator
# (10 ns) and the network's clock through the link's asynchronous FIFOs, and the harness holds the
# network in reset for its first cycles, as a PLL does until it locks.

def test_the_whole_digits_test_set_across_a_faster_network_clock(digits_build):
    r = run_board(digits_build, sim=True, network_period_ns=7.3, progress=False)
    assert r["network_period_ns"] == 7.3
    assert r["images"] == 360 and r["mismatches"] == 0 and r["wrong_results_accepted"] == 0
    assert r["hw_accuracy"] == r["ir_accuracy"] > 0.8 and r["link_events"] == {}
    assert r["bytes_to_board"] == 360 * 39 + 7 and r["bytes_to_host"] == 360 * 17 + 17


def test_a_network_clock_slower_than_the_oscillator(slow_cnn_build):
    # Native ports, 100 input beats per image, the network's clock 2.37 times the oscillator's period.
    build_dir, inputs = slow_cnn_build
    r = run_board(build_dir, sim=True, inputs=inputs, divisor=4, network_period_ns=23.7, progress=False)
    assert r["images"] == 40 and r["mismatches"] == 0 and r["link_events"] == {}


def test_resets_and_faults_across_the_clock_crossing(digits_build):
    # A reset of the board top mid-frame must empty both crossings and reset the network with them:
    # a result of an image from before the reset would come back under a later sequence number.
    r = run_board(digits_build, sim=True, limit=100, fault_rate=0.3, seed=3, divisor=4, network_period_ns=31.4,
                  progress=False)
    assert r["images"] == 100 and r["mismatches"] == 0 and r["wrong_results_accepted"] == 0
    assert r["faults_by_kind"]["reset to board"] >= 10 and r["board_resets"] == r["faults_by_kind"]["reset to board"]
    assert r["faults_detected"] == r["faults_injected"] >= 40, r["undetected_faults"]
    assert r["hw_accuracy"] == r["ir_accuracy"]


def test_the_crossing_link_and_its_bad_parameters(digits_build):
    from lowbit.boards.link import LinkCore
    from lowbit.hw.unused import unelaborated

    build = load_build(digits_build)
    crossing = unelaborated(LinkCore.for_build(build, divisor=8, crossing=True))
    assert {"net_clk", "net_hold"} <= set(crossing.signature.members) and crossing.crossing
    assert "net_clk" not in unelaborated(LinkCore.for_build(build, divisor=8)).signature.members
    with pytest.raises(TypeError, match="Crossing must be a bool, not 'yes'"):
        LinkCore.for_build(build, divisor=8, crossing="yes")
    for period in (7.3001, 0.05, 7.301, "7"):
        with pytest.raises(LowbitError, match="the network clock period must be an even number of picoseconds"):
            SimulatedBoard(build, network_period_ns=period)
    with pytest.raises(LowbitError, match="a network clock period is set only in the simulated board"):
        run_board(digits_build, port="loop://", network_period_ns=7.3, progress=False)


def test_a_board_running_another_build_is_refused(digits_build, digits_graph, tmp_path):
    other = tmp_path / "other"
    compile_graph(digits_graph[0], other, target_cycles=32)  # another folding: other Verilog
    with SimulatedBoard(load_build(digits_build)) as board:
        with pytest.raises(LowbitError, match="runs another build or protocol") as e:
            run_board(other, port=board.url, limit=5, progress=False)
        board.finish()
    assert "lowbit program" in e.value.hint


def test_lowbit_run_cli(digits_build, capsys, tmp_path):
    assert main(["run", str(digits_build), "--sim", "--limit", "30", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["transport"] == "uart-sim" and report["images"] == 30 and report["mismatches"] == 0
    before = sorted(tmp_path.iterdir())
    for args, message in [
        (["--port", str(tmp_path / "ttyUSB9")], "cannot open serial port"),
        (["--port", "loop://"], "no lowbit board answered"),  # a line that only echoes
        (["--port", "loop://", "--faults", "0.1"], "faults are injected only into the simulated board"),
        (["--sim", "--divisor", "2"], "too short for the board's receiver"),
    ]:
        assert main(["run", str(digits_build), *args]) == 2
        assert message in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == before  # nothing written


def test_results_of_an_earlier_run_are_not_taken_for_this_ones(digits_build):
    # A run stopped with images in flight leaves their results coming; the next run's first
    # images reuse those sequence numbers, so the client waits for the line to go quiet first.
    from lowbit.flow import _test_vectors

    build = load_build(digits_build)
    _, _, beats, expected = _test_vectors(build.graph(), build.manifest, dataset=None, data_root=None, inputs=None,
                                          labels=None, limit=6)
    with SimulatedBoard(build) as board:
        port = open_port(board.url, 115200)
        port.write(b"".join(p.encode_frame(p.IMAGE, seq, bytes(32)) for seq in range(3)))  # the earlier run
        client = BoardClient(port, result_bytes=10)
        client.info()
        record = client.run([p.pack_beats([b], 256) for b in beats])
        port.close()
        board.finish()
    assert record.events["frames of an earlier run discarded"] == 3
    assert [p.unpack_beats(r, 1, 80)[0] for r in record.results] == expected
