"""The live status line: stage from a tool's log, elapsed time, drawn only on a terminal."""
import io
import time

from lowbit.boards.pnr import NEXTPNR_STAGE
from lowbit.boards.synth import YOSYS_STAGE
from lowbit.core import status
from lowbit.core.status import Status


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_line_shows_the_latest_stage_of_the_latest_log(tmp_path):
    yosys, nextpnr = tmp_path / "top.rpt", tmp_path / "top.tim"
    s = Status("place and route (ulx3s)", logs=[(yosys, YOSYS_STAGE), (nextpnr, NEXTPNR_STAGE)])
    assert s.line(0.2) == "place and route (ulx3s): (0 s)"  # no log yet
    yosys.write_text("2. Executing HIERARCHY pass (managing design hierarchy).\n"
                     "14.3. Executing ABC pass (technology mapping using ABC).\n")
    assert s.line(7) == "place and route (ulx3s): ABC pass (7 s)"
    nextpnr.write_text("Info: Packing IOs..\nInfo: Running simulated annealing placer for refinement.\n"
                       "Info:     at iteration #1: temp = 1.0\n")
    assert s.line(65.4) == "place and route (ulx3s): Running simulated annealing placer for refinement (65 s)"


def test_drawn_on_a_terminal_and_cleared_after(tmp_path):
    out = Terminal()
    with Status("verilator build top", stream=out, interval=0.05) as s:
        s.stage("verilating")
        time.sleep(0.3)
    text = out.getvalue()
    assert "\rverilator build top: verilating (0 s)" in text
    assert text.endswith("\r")  # the line is blanked when the step ends
    assert text.rsplit("\r", 2)[-2].strip() == ""


def test_not_drawn_off_a_terminal_quiet_or_under_a_bar():
    for stream, quiet, bar in ((io.StringIO(), False, False), (Terminal(), True, False), (Terminal(), False, True)):
        status.set_quiet(quiet)
        try:
            with status.bar_shown() if bar else open(__file__):
                with Status("yosys top", stream=stream, interval=0.01):
                    time.sleep(0.1)
        finally:
            status.set_quiet(False)
        assert stream.getvalue() == ""
