"""A Verilog test harness around a stream design, so that the simulator, not Python, runs each batch.

The harness holds a batch of input words and a buffer for the output words in memories, and
plays both ends of the stream itself: it offers the inputs in order on ``i``, takes what comes
out of ``o``, inserts the random idle cycles on both sides (a xorshift generator per side), and
stamps every handshake with its cycle. Python (:mod:`lowbit.sim.bench`) writes a batch into the
input memory over VPI, starts it by changing ``batch``, and sleeps until ``done`` rises; it then
reads the outputs and compares them. Idle cycles, stalls and even the beats themselves never
wake Python: one batch of thousands of beats is one wake-up.

Protocol of one batch (all ports are harness inputs set by Python between batches):

- ``n_in`` input words from ``in_mem[0..n_in)`` are offered in order. Before each beat after a
  handshake, with chance ``in_gap_threshold / 65536`` a gap of 1 to ``max_gap`` cycles with
  ``valid`` low is drawn (the same gap-before-beat model as :class:`lowbit.sim.stream.Stalls`).
  ``valid`` is never dropped under an offered beat, as the stream protocol requires.
- ``o.ready`` is high except during backpressure gaps drawn the same way before each of the
  ``n_out`` expected output beats.
- An AXI4-Stream design gets ``s_axis_tlast`` high on the last of every ``in_beats`` input beats,
  and its ``m_axis_tlast`` is checked on every output beat against the last of every
  ``out_beats``: ``last_errors`` counts the beats where it differs, ``first_last_error`` is the
  first one's index (``in_beats`` or ``out_beats`` 0 turns that side off).
- The batch ends (``done`` rises) when all inputs went in, ``n_out`` beats came out and no beat
  came for ``max(drain_cycles, 2 * longest wait for a beat)`` cycles; or when ``max_extra``
  beats beyond ``n_out`` came; or when nothing moved for ``timeout_cycles`` (``timed_out``); or
  after ``max_cycles`` cycles if that is not 0, or at cycle ``stop_at`` (``stopped``, used to
  cut a stream short).
- ``in_idle`` and ``out_idle`` count the gap cycles of each side while it still had beats to move.

Waveforms: a harness generated with ``wave_file=...`` dumps into that file from the cycle
``wave_from`` on; the testbench ends the run at ``wave_to`` (through ``stop_at``), so a mismatch
deep into a long run gives a small waveform around itself.
"""

import re

from lowbit.core.errors import LowbitError

__all__ = ["HARNESS_NAME", "DesignPorts", "design_ports", "harness_verilog", "batch_depth"]

HARNESS_NAME = "lowbit_bench"

# Smallest memory depth: large enough that a batch runs long compared with its start and
# drain, small enough that a 1000-bit payload memory stays a few hundred kB.
MIN_DEPTH = 2048


class DesignPorts:
    """The stream ports of a design, read from its Verilog.

    Attributes
    ----------
    in_width, out_width : int
        Widths of ``i__payload`` and ``o__payload`` (of ``s_axis_tdata`` and ``m_axis_tdata`` for
        an AXI4-Stream top).
    has_clk, has_rst : bool
        Whether the design has the ports ``clk`` and ``rst`` (``aclk`` and ``aresetn``; Amaranth
        omits them when unused).
    axi_stream : bool
        Whether the ports are AXI4-Stream's (:class:`lowbit.hw.axis.AxiStreamTop`).
    """

    def __init__(self, in_width, out_width, has_clk, has_rst, axi_stream=False):
        self.in_width, self.out_width = in_width, out_width
        self.has_clk, self.has_rst = has_clk, has_rst
        self.axi_stream = axi_stream


def design_ports(verilog, top):
    """Find the stream ports of module ``top`` in ``verilog``.

    Parameters
    ----------
    verilog : str
    top : str

    Returns
    -------
    DesignPorts

    Raises
    ------
    LowbitError
        If the module or one of its stream ports is missing.
    """
    match = re.search(rf"^\s*module\s+{re.escape(top)}\s*[(#;](.*?)^\s*endmodule", verilog,
                      re.M | re.S)
    if match is None:
        raise LowbitError(f"the Verilog has no module {top!r}",
                          "pass the name the Verilog was generated with (verilog.convert(..., "
                          "name=...))")
    body = match.group(1)
    ports = {}
    for direction, msb, lsb, name in re.findall(
            r"^\s*(input|output)\s+(?:wire\s+|reg\s+)?(?:\[(\d+):(\d+)\]\s*)?([A-Za-z_][\w$]*)\s*;",
            body, re.M):
        ports[name] = (direction, abs(int(msb) - int(lsb)) + 1 if msb else 1)
    axi = "s_axis_tdata" in ports
    wanted = _AXI_PORTS if axi else _NATIVE_PORTS
    for name, direction in wanted.items():
        if ports.get(name, (None,))[0] != direction:
            raise LowbitError(f"module {top!r} has no {direction} port {name}",
                              "the design needs Amaranth stream ports i: In(stream.Signature(...)) "
                              "and o: Out(stream.Signature(...)), or AXI4-Stream s_axis_* and m_axis_* ports")
    data_in, data_out, clk, rst = ("s_axis_tdata", "m_axis_tdata", "aclk", "aresetn") if axi else \
        ("i__payload", "o__payload", "clk", "rst")
    return DesignPorts(ports[data_in][1], ports[data_out][1], ports.get(clk, ("",))[0] == "input",
                       ports.get(rst, ("",))[0] == "input", axi)


_NATIVE_PORTS = {"i__payload": "input", "i__valid": "input", "i__ready": "output",
                 "o__payload": "output", "o__valid": "output", "o__ready": "input"}
_AXI_PORTS = {"s_axis_tdata": "input", "s_axis_tvalid": "input", "s_axis_tready": "output",
              "s_axis_tlast": "input", "m_axis_tdata": "output", "m_axis_tvalid": "output",
              "m_axis_tready": "input", "m_axis_tlast": "output"}


def batch_depth(in_per_item, out_per_item):
    """Memory depth for batches of whole items: :data:`MIN_DEPTH`, or a power of two holding one item.

    The depth is part of the harness text and so of the build's cache key; rounding it keeps one
    build for any number of items.
    """
    need = max(in_per_item, out_per_item, 1)
    return max(MIN_DEPTH, 1 << (need - 1).bit_length())


def harness_verilog(ports, top, depth, *, wave_file=None):
    """Verilog of the harness module :data:`HARNESS_NAME` around the design ``top``.

    Parameters
    ----------
    ports : DesignPorts
    top : str
        The design's module name; it must not be :data:`HARNESS_NAME`.
    depth : int
        Words in the input memory and in the output memory.
    wave_file : str, optional
        Dump waveforms to this file between ``wave_from`` and ``wave_to``.

    Returns
    -------
    str
    """
    if top == HARNESS_NAME:
        raise LowbitError(f"the design may not be called {HARNESS_NAME!r}: the test harness "
                          "uses that name", "generate the Verilog under another name")
    wi, wo = ports.in_width, ports.out_width
    aw = max(1, (depth - 1).bit_length())
    if ports.axi_stream:
        conns = [".s_axis_tdata(i_payload)", ".s_axis_tvalid(i_valid)", ".s_axis_tready(i_ready)",
                 ".s_axis_tlast(i_last)", ".m_axis_tdata(o_payload)", ".m_axis_tvalid(o_valid)",
                 ".m_axis_tready(o_ready)", ".m_axis_tlast(o_last)"]
        conns += [".aclk(clk)"] * ports.has_clk + [".aresetn(~rst)"] * ports.has_rst
    else:  # no tlast: the output's is taken to be the one expected
        conns = [".i__payload(i_payload)", ".i__valid(i_valid)", ".i__ready(i_ready)",
                 ".o__payload(o_payload)", ".o__valid(o_valid)", ".o__ready(o_ready)"]
        conns += [".clk(clk)"] * ports.has_clk + [".rst(rst)"] * ports.has_rst
    last_out = "" if ports.axi_stream else "\n  assign o_last = o_last_expected;"
    waves = ""
    if wave_file is not None:
        waves = f"""
  initial $dumpfile("{wave_file}");
  // $dumpoff is a no-op in some simulators: the dump starts at wave_from, and the testbench
  // ends the run at wave_to (stop_at) instead.
  always @(posedge clk) begin
    if (cycle == wave_from) $dumpvars(0, {HARNESS_NAME});
    if (cycle == wave_to) $dumpoff;
  end
"""
    return f"""
module {HARNESS_NAME}(
  input clk, input rst,
  input [31:0] batch, input [31:0] n_in, input [31:0] n_out,
  input [16:0] in_gap_threshold, input [16:0] out_gap_threshold, input [15:0] max_gap,
  input [31:0] in_seed, input [31:0] out_seed,
  input [31:0] timeout_cycles, input [31:0] drain_cycles, input [31:0] max_extra,
  input [31:0] max_cycles, input [63:0] stop_at, input [63:0] wave_from, input [63:0] wave_to,
  input [31:0] in_beats, input [31:0] out_beats,
  output reg done, output reg timed_out, output reg stopped,
  output reg [31:0] last_errors, output reg [31:0] first_last_error,
  output reg [31:0] in_count, output reg [31:0] out_count,
  output reg [63:0] in_idle, output reg [63:0] out_idle,
  output reg [63:0] cycle, output reg [63:0] batch_start,
  output reg [63:0] last_in, output reg [63:0] last_out
);
  reg [{wi - 1}:0] in_mem [0:{depth - 1}];
  reg [{wo - 1}:0] out_mem [0:{depth - 1}];
  reg [63:0] in_cycles [0:{depth - 1}];
  reg [63:0] out_cycles [0:{depth - 1}];

  wire [{wi - 1}:0] i_payload;
  wire i_valid, i_ready;
  wire [{wo - 1}:0] o_payload;
  wire o_valid, o_ready;
  // tlast: high on the last beat of each item of in_beats (out_beats) beats; 0 means no item
  reg [31:0] in_index, out_index;
  wire i_last = (in_beats != 0) & (in_index == in_beats - 1);
  wire o_last_expected = (out_beats != 0) & (out_index == out_beats - 1);
  wire o_last;{last_out}
  {top} dut({", ".join(conns)});

  reg [31:0] current;
  reg running;
  reg [31:0] in_rng, out_rng;
  reg [15:0] in_gap, out_gap;
  reg [31:0] quiet, longest;
  initial begin
    cycle = 0; current = 0; running = 0; done = 0; timed_out = 0; stopped = 0;
    in_count = 0; out_count = 0; in_gap = 0; out_gap = 0; in_index = 0; out_index = 0; last_errors = 0;
    first_last_error = 0;
  end

  function [31:0] xorshift(input [31:0] x);
    reg [31:0] y;
    begin
      y = x ^ (x << 13);
      y = y ^ (y >> 17);
      xorshift = y ^ (y << 5);
    end
  endfunction

  // The high half decides whether there is a gap, the low half how long it is.
  function [15:0] gap_of(input [31:0] r, input [16:0] threshold, input [15:0] longest_gap);
    gap_of = ({{1'b0, r[31:16]}} < threshold) ? 16'd1 + r[15:0] % longest_gap : 16'd0;
  endfunction

  wire in_pending = in_count < n_in;
  assign i_valid = running & in_pending & (in_gap == 0);
  assign i_payload = in_mem[in_count[{aw - 1}:0]];
  assign o_ready = running & (out_gap == 0);
  wire in_beat = i_valid & i_ready;
  wire out_beat = o_valid & o_ready;
  wire awaited = (out_count < n_out) | in_pending;
  wire [31:0] drain_limit = (2 * longest > drain_cycles) ? 2 * longest : drain_cycles;
  wire [31:0] next_in_rng = xorshift(in_rng);
  wire [31:0] next_out_rng = xorshift(out_rng);

  always @(posedge clk) begin
    cycle <= cycle + 1;
    if (batch != current) begin
      current <= batch; running <= 1; done <= 0; timed_out <= 0; stopped <= 0;
      in_count <= 0; out_count <= 0; in_idle <= 0; out_idle <= 0; quiet <= 0; longest <= 0;
      in_index <= 0; out_index <= 0; last_errors <= 0; first_last_error <= 0;
      batch_start <= cycle + 1; last_in <= cycle; last_out <= cycle;
      // A zero state would stay zero.
      in_rng <= in_seed | 1; out_rng <= out_seed | 1;
      in_gap <= gap_of(in_seed | 1, in_gap_threshold, max_gap);
      out_gap <= gap_of(out_seed | 1, out_gap_threshold, max_gap);
    end else if (running) begin
      if (in_beat) begin
        in_cycles[in_count[{aw - 1}:0]] <= cycle;
        in_count <= in_count + 1;
        in_index <= (in_index + 1 == in_beats) ? 0 : in_index + 1;
        last_in <= cycle;
        in_rng <= next_in_rng;
        in_gap <= (in_count + 1 < n_in) ? gap_of(next_in_rng, in_gap_threshold, max_gap) : 16'd0;
      end else if (in_gap != 0) begin
        in_gap <= in_gap - 1;
        if (in_pending) in_idle <= in_idle + 1;
      end
      if (out_beat) begin
        if (out_count < {depth}) begin
          out_mem[out_count[{aw - 1}:0]] <= o_payload;
          out_cycles[out_count[{aw - 1}:0]] <= cycle;
        end
        out_count <= out_count + 1;
        out_index <= (out_index + 1 == out_beats) ? 0 : out_index + 1;
        if (o_last != o_last_expected) begin
          if (last_errors == 0) first_last_error <= out_count;
          last_errors <= last_errors + 1;
        end
        if (cycle - last_out > longest) longest <= cycle - last_out;
        last_out <= cycle;
        out_rng <= next_out_rng;
        out_gap <= (out_count + 1 < n_out) ? gap_of(next_out_rng, out_gap_threshold, max_gap) : 16'd0;
      end else if (out_gap != 0) begin
        out_gap <= out_gap - 1;
        if (out_count < n_out) out_idle <= out_idle + 1;
      end
      quiet <= (in_beat | out_beat) ? 0 : quiet + 1;
      if (max_cycles != 0 && cycle + 1 - batch_start >= max_cycles || cycle >= stop_at) begin
        running <= 0; done <= 1; stopped <= 1;
      end else if (!awaited && (quiet >= drain_limit || out_count >= n_out + max_extra)) begin
        running <= 0; done <= 1;
      end else if (awaited && quiet >= timeout_cycles) begin
        running <= 0; done <= 1; timed_out <= 1;
      end
    end
  end
{waves}endmodule
"""
