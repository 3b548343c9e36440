"""The whole board top in Verilator, its serial line on a TCP socket, so that the host client of
:mod:`lowbit.boards.host` talks to it exactly as to a board (pyserial's ``socket://`` port).

The simulated design is :class:`lowbit.boards.link.LinkCore` (UART, framing, CRC, image buffers,
the network) inside the harness :data:`BENCH_NAME`, which plays the host's UART: it sends the
bytes Python puts in ``h2b_mem`` onto ``rx`` at the link's bit time, and puts the bytes it reads
from ``tx`` into ``b2h_mem``. Python (:mod:`lowbit.sim.uart_board_test`) wakes every few byte
times to move bytes between those memories and the socket, so no bit wakes it.

Fault injection on that wire (``fault_rate``, the chance that a frame is hit, each direction):

- towards the board, each hit image frame gets one bit flipped, one byte dropped, or a reset of
  the whole board top between two of its bytes (the harness holds ``rst`` for a few cycles);
- towards the host, each hit frame gets one bit flipped or one byte dropped.

Every fault is recorded with the span of the frame it hit, as offsets in the stream its receiver
got. A dropped byte whose place the next byte takes with the same value (the next frame's SYNC
after a run of 0xA5 bytes ends the frame) leaves the frame as it was sent: it is no fault, and
the next frame's damage starts after it (``Wire.settled`` in :mod:`lowbit.sim.uart_board_test`).
The harness logs the span of every image frame the board took as good, and the client reports
the span of every frame it took: a fault is detected when no frame that its receiver took
overlaps the frame it damaged (:func:`undetected_faults`).

With a network clock period (``network_period_ns``), the network runs in its own clock domain as
on a board with a PLL: the harness's ``net_clk`` input, driven by cocotb at that period beside the
10 ns oscillator, and every byte crosses between the two through the link's asynchronous FIFOs.
The harness holds the network in reset for the first :data:`LOCK_CYCLES` cycles, as a PLL does
until it locks.
"""

import tempfile
import threading
import time
from pathlib import Path

from lowbit.core.errors import LowbitError

__all__ = ["BENCH_NAME", "bench_verilog", "SimulatedBoard", "undetected_faults"]

BENCH_NAME = "lowbit_uart_bench"
LINK_NAME = "lowbit_link"
RING_BITS = 16  # bytes in each direction's ring, as a power of two
LOG_BITS = 12  # image frames logged between two wake-ups, at most
OSCILLATOR_NS = 10  # the harness's clock, the board's oscillator
RESET_CYCLES = 8
# Oscillator cycles before the simulated PLL "locks": the first images arrive and wait before it does.
LOCK_CYCLES = 20000


def bench_verilog(divisor, crossing=False):
    """Verilog of the harness module :data:`BENCH_NAME` around :data:`LINK_NAME`; with
    ``crossing``, the link's network has the clock input ``net_clk``."""
    net_port = "\n    input net_clk," if crossing else ""
    net_hold = f"""
    reg net_hold = 1;
    reg [15:0] lock_left = {LOCK_CYCLES};
    always @(posedge clk) begin
        if (lock_left != 0) lock_left <= lock_left - 1;
        net_hold <= lock_left != 0;
    end""" if crossing else ""
    net_conn = ", .net_clk(net_clk), .net_hold(net_hold)" if crossing else ""
    return f"""
module {BENCH_NAME} ({net_port}
    input clk,
    input [31:0] h2b_wr,      // bytes Python has put in h2b_mem
    input [31:0] reset_at,    // hold the board in reset before sending this byte...
    input [31:0] reset_req,   // ...when this count is ahead of resets_done
    output reg [31:0] h2b_sent = 0,
    output reg [31:0] b2h_wr = 0,
    output reg [31:0] log_wr = 0,
    output reg [31:0] rx_bytes = 0,
    output reg [31:0] resets_done = 0,
    output reg [31:0] framing_errors = 0,
    output reg [31:0] cycle = 0
);
    localparam DIV = {divisor};
    reg [7:0] h2b_mem [0:{(1 << RING_BITS) - 1}];
    reg [7:0] b2h_mem [0:{(1 << RING_BITS) - 1}];
    reg [63:0] log_mem [0:{(1 << LOG_BITS) - 1}];  // {{first byte, last byte}} of each image taken

    reg rst = 1;
    reg [7:0] rst_left = {RESET_CYCLES};
    wire tx, rx_strobe, frame_begin, frame_commit;
    reg [9:0] h_shift = 10'h3ff;
    reg [3:0] h_bits = 0;
    reg [15:0] h_timer = 0;{net_hold}
    {LINK_NAME} link (.clk(clk), .rst(rst), .rx(h_shift[0]), .tx(tx), .rx_strobe(rx_strobe),
                      .frame_begin(frame_begin), .frame_commit(frame_commit){net_conn});

    // A reset comes between two bytes, once the board's receiver (two synchronizer stages, then
    // the middle of the stop bit) has surely taken the last one.
    reg [15:0] h_idle = 0;
    wire reset_due = (reset_req != resets_done) && (h2b_sent == reset_at) && (h_idle > DIV + 4);
    always @(posedge clk) begin
        cycle <= cycle + 1;
        h_idle <= (h_bits == 0 && rst_left == 0) ? (h_idle == 16'hffff ? h_idle : h_idle + 1) : 0;
        // The host's transmitter: 8N1, DIV cycles per bit; a reset only between two bytes.
        if (rst_left != 0) begin
            rst_left <= rst_left - 1;
            rst <= rst_left != 1;
        end else if (h_bits == 0) begin
            if (reset_due) begin
                rst <= 1;
                rst_left <= {RESET_CYCLES};
                resets_done <= resets_done + 1;
            end else if (h2b_sent != h2b_wr && !(reset_req != resets_done && h2b_sent == reset_at)) begin
                h_shift <= {{1'b1, h2b_mem[h2b_sent[{RING_BITS - 1}:0]], 1'b0}};
                h_bits <= 10;
                h_timer <= DIV - 1;
            end
        end else if (h_timer != 0) begin
            h_timer <= h_timer - 1;
        end else begin
            h_shift <= {{1'b1, h_shift[9:1]}};
            h_bits <= h_bits - 1;
            h_timer <= DIV - 1;
            if (h_bits == 1) h2b_sent <= h2b_sent + 1;
        end
    end

    // The host's receiver: the start bit checked at its middle, then one sample per bit time.
    reg d_busy = 0;
    reg [3:0] d_bit = 0;
    reg [15:0] d_timer = 0;
    reg [7:0] d_shift = 0;
    always @(posedge clk) begin
        if (!d_busy) begin
            if (!tx) begin
                d_busy <= 1;
                d_bit <= 0;
                d_timer <= DIV / 2;
            end
        end else if (d_timer != 0) begin
            d_timer <= d_timer - 1;
        end else begin
            d_timer <= DIV - 1;
            d_bit <= d_bit + 1;
            if (d_bit == 0) begin
                if (tx) d_busy <= 0;  // a glitch
            end else if (d_bit <= 8) begin
                d_shift <= {{tx, d_shift[7:1]}};
            end else begin
                if (tx) begin
                    b2h_mem[b2h_wr[{RING_BITS - 1}:0]] <= d_shift;
                    b2h_wr <= b2h_wr + 1;
                end else begin
                    framing_errors <= framing_errors + 1;
                end
                d_busy <= 0;
            end
        end
    end

    // Which bytes the board took as one good image frame.
    reg [31:0] frame_start = 0;
    always @(posedge clk) begin
        if (rx_strobe) rx_bytes <= rx_bytes + 1;
        if (frame_begin) frame_start <= rx_bytes;
        if (frame_commit) begin
            log_mem[log_wr[{LOG_BITS - 1}:0]] <= {{frame_start, rx_bytes}};
            log_wr <= log_wr + 1;
        end
    end
endmodule
"""


def undetected_faults(faults, board_taken, host_taken):
    """The faults whose damaged frame overlaps a frame its receiver took: ``board_taken`` are the
    board's image frames as inclusive ``[first, last]`` byte offsets, ``host_taken`` the client's
    frames as ``[start, end)``."""
    import bisect

    spans = {"to_board": sorted((a, b + 1) for a, b in board_taken), "to_host": sorted(map(tuple, host_taken))}
    starts = {k: [a for a, _ in v] for k, v in spans.items()}
    missed = []
    for f in faults:
        lo, hi = f["span"]  # [lo, hi) in the receiver's stream
        taken = spans[f["direction"]]
        k = bisect.bisect_left(starts[f["direction"]], hi)  # frames starting before hi
        if any(b > lo for _, b in taken[max(0, k - 4):k]):
            missed.append(f)
    return missed


class SimulatedBoard:
    """The board top of a build running in Verilator, listening on ``self.url`` once started.

    Use as a context manager; :meth:`finish` (after the client closed its port) returns the
    simulation's record: the faults injected, the image frames the board took, byte counts.
    ``network_period_ns`` (an even number of picoseconds) gives the network its own clock (see
    the module docstring); the oscillator's period is :data:`OSCILLATOR_NS`.
    """

    def __init__(self, build, *, divisor=8, fault_rate=0.0, seed=0, network_period_ns=None, verbose=False):
        from amaranth.back import verilog as amaranth_verilog

        from lowbit.boards.link import LinkCore

        if not 0.0 <= fault_rate <= 0.5:
            raise LowbitError(f"the fault rate must be between 0 and 0.5, not {fault_rate}")
        if network_period_ns is not None:
            # Clock edges fall on whole simulator steps (1 ps), half a period apart.
            if isinstance(network_period_ns, bool) or not isinstance(network_period_ns, (int, float)) \
                    or not 0.1 <= network_period_ns <= 1000 or round(network_period_ns * 1000) % 2 \
                    or abs(network_period_ns * 1000 - round(network_period_ns * 1000)) > 1e-6:
                raise LowbitError(f"the network clock period must be an even number of picoseconds between "
                                  f"0.1 and 1000 ns, not {network_period_ns!r} ns")
        crossing = network_period_ns is not None
        self.link = LinkCore.for_build(build, divisor=divisor, crossing=crossing)
        self.network_period_ns = network_period_ns
        self.verilog = (build.verilog() + amaranth_verilog.convert(self.link, name=LINK_NAME)
                        + bench_verilog(divisor, crossing))
        self.fault_rate, self.seed, self.verbose = fault_rate, seed, verbose
        self.url = None
        self._thread, self._outcome, self._tmp = None, {}, None

    def __enter__(self):
        from .runner import run_testbench

        self._tmp = tempfile.TemporaryDirectory(prefix="lowbit-uart-")
        port_file = Path(self._tmp.name) / "port"
        job = {"port_file": str(port_file), "divisor": self.link.divisor, "fault_rate": self.fault_rate,
               "seed": self.seed, "image_bytes": self.link.image_bytes, "result_bytes": self.link.result_bytes,
               "ring_bits": RING_BITS, "log_bits": LOG_BITS, "accept_seconds": 600,
               "oscillator_ns": OSCILLATOR_NS, "network_period_ns": self.network_period_ns}

        def run():
            try:
                self._outcome["results"], self._outcome["seconds"] = run_testbench(
                    self.verilog, BENCH_NAME, "lowbit.sim.uart_board_test", job, public=("*",), seed=self.seed,
                    verbose=self.verbose)
            except BaseException as e:  # handed to the caller in finish()
                self._outcome["error"] = e

        self._thread = threading.Thread(target=run, name="lowbit-uart-sim", daemon=True)
        self._thread.start()
        while not port_file.exists():  # the Verilator build may take a minute the first time
            if not self._thread.is_alive():
                self.finish()
            time.sleep(0.05)
        self.url = f"socket://127.0.0.1:{int(port_file.read_text())}"
        return self

    def finish(self):
        """Wait for the simulation to end (the client has closed its port); its record."""
        self._thread.join()
        if "error" in self._outcome:
            raise self._outcome["error"]
        return self._outcome["results"]

    def __exit__(self, *exc):
        if self._thread is not None and self._thread.is_alive():
            if exc[0] is not None and self.url:
                # The client failed, maybe before it connected: a connection that closes at once
                # ends the bridge, so that no simulator is left running.
                import contextlib
                import socket

                with contextlib.suppress(OSError), \
                        socket.create_connection(("127.0.0.1", int(self.url.rsplit(":", 1)[1])), timeout=1):
                    pass
            self._thread.join(timeout=60)
        if self._tmp is not None:
            self._tmp.cleanup()
