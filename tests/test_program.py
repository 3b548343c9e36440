"""`lowbit program`: the board platform's programming command, built and run without a board
(a stand-in programmer records what it was given), and every refusal with exit 2."""

import os
import stat

import pytest

from lowbit.boards.program import program_command
from lowbit.cli import main


def _bitstreams(tmp_path):
    (tmp_path / "icebreaker.bin").write_bytes(b"\xff\x00bitstream")
    (tmp_path / "ulx3s.bit").write_bytes(b"\xff\x00bitstream")
    return tmp_path


def _programmer(tmp_path, name, code=0, says=""):
    """A stand-in programmer that writes its arguments to ``args.txt`` and exits with ``code``."""
    tool = tmp_path / name
    tool.write_text(f"#!/bin/sh\necho \"$@\" > '{tmp_path}/args.txt'\necho '{says}' >&2\nexit {code}\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return tool


def test_the_platforms_own_commands(tmp_path, monkeypatch):
    folder = _bitstreams(tmp_path)
    monkeypatch.delenv("ICEPROG", raising=False)
    monkeypatch.delenv("OPENFPGALOADER", raising=False)
    assert program_command(folder / "icebreaker.bin", "icebreaker") == ["iceprog", str(folder / "icebreaker.bin")]
    assert program_command(folder / "ulx3s.bit", "ulx3s") == ["openFPGALoader", "-b", "ulx3s", "-m",
                                                            str(folder / "ulx3s.bit")]
    # a 'lowbit build' folder: the board's bitstream in it
    assert program_command(folder, "ulx3s")[-1] == str(folder / "ulx3s.bit")
    monkeypatch.setenv("ICEPROG", "/opt/icestorm/bin/iceprog")  # the platform's own variable
    assert program_command(folder / "icebreaker.bin", "icebreaker")[0] == "/opt/icestorm/bin/iceprog"


def test_dry_run_prints_the_command(tmp_path, capsys, monkeypatch):
    folder = _bitstreams(tmp_path)
    monkeypatch.delenv("OPENFPGALOADER", raising=False)
    assert main(["program", str(folder / "ulx3s.bit"), "--board", "ulx3s", "--dry-run"]) in (0, None)
    assert capsys.readouterr().out.strip() == f"would run: openFPGALoader -b ulx3s -m {folder / 'ulx3s.bit'}"


def test_programming_runs_the_programmer(tmp_path, capsys, monkeypatch):
    folder = _bitstreams(tmp_path)
    monkeypatch.setenv("ICEPROG", str(_programmer(tmp_path, "iceprog")))
    assert main(["program", str(folder / "icebreaker.bin"), "--board", "icebreaker"]) in (0, None)
    assert (tmp_path / "args.txt").read_text().strip() == str(folder / "icebreaker.bin")
    assert capsys.readouterr().out.startswith("programmed: ")


def test_no_board_attached_is_a_clear_error(tmp_path, capsys, monkeypatch):
    folder = _bitstreams(tmp_path)
    tool = _programmer(tmp_path, "openFPGALoader", code=1, says="unable to open ftdi device: -3 (device not found)")
    monkeypatch.setenv("OPENFPGALOADER", str(tool))
    assert main(["program", str(folder / "ulx3s.bit"), "--board", "ulx3s"]) == 2
    err = capsys.readouterr().err
    assert "openFPGALoader failed with exit 1: unable to open ftdi device: -3 (device not found)" in err
    assert "fix: check that the ulx3s board is plugged in" in err


@pytest.mark.parametrize("argv,message", [
    (["<bit>", "--board", "ulx3s"], "the programmer 'openFPGALoader' for board 'ulx3s' is not installed"),
    (["<bin>", "--board", "ulx3s"], "board 'ulx3s' is programmed with a .bit bitstream"),
    (["<missing>", "--board", "icebreaker"], "does not exist"),
    (["<empty>", "--board", "icebreaker"], "holds no bitstream for board 'icebreaker'"),
    (["<bin>", "--board", "arty-a7-35"], "board 'arty-a7-35' has no open bitstream flow to program"),
    (["<bin>", "--board", "nosuch"], "unknown board 'nosuch'"),
])
def test_refusals_exit_2(argv, message, tmp_path, capsys, monkeypatch):
    (tmp_path / "b").mkdir()
    folder = _bitstreams(tmp_path / "b")
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no programmer anywhere
    monkeypatch.delenv("OPENFPGALOADER", raising=False)
    paths = {"<bit>": folder / "ulx3s.bit", "<bin>": folder / "icebreaker.bin",
             "<missing>": folder / "none.bin", "<empty>": tmp_path / "empty"}
    before = sorted(os.listdir(folder))
    assert main(["program", *[str(paths.get(a, a)) for a in argv]]) == 2
    err = capsys.readouterr().err
    assert message in err and "fix:" in err
    assert sorted(os.listdir(folder)) == before
