"""Programming a board with a bitstream (`lowbit program`), through the amaranth-boards platform's
own programming step: ``iceprog`` for iCE40 boards, ``openFPGALoader`` for ECP5 ones (each may be
named by the platform's environment variable, ``ICEPROG`` or ``OPENFPGALOADER``).

The platform runs its programmer itself. Its command is first recorded without running it, so
that a missing programmer is a clear error before anything touches a board, and the command can
be shown (``--dry-run``) and tested without one.
"""

import contextlib
import shutil
import subprocess
from pathlib import Path
from unittest import mock

from lowbit.core.errors import LowbitError

from .boards import BOARDS, get_board

__all__ = ["program_command", "program_board"]

# The programmers' own packages, for the fix of a missing one.
_INSTALL = {"iceprog": "install icestorm's iceprog (or set ICEPROG to it)",
            "openFPGALoader": "install openFPGALoader (or set OPENFPGALOADER to it)"}


class _Products:
    """The build products a platform's ``toolchain_program`` reads: the user's bitstream, by the
    name the platform asks for (``NAME.bin`` on iCE40, ``NAME.bit`` on ECP5)."""

    def __init__(self, bitstream, board):
        self.bitstream, self.board = bitstream, board

    @contextlib.contextmanager
    def extract(self, *names):
        wanted = [Path(n).suffix for n in names]
        if self.bitstream.suffix not in wanted:
            raise LowbitError(f"board {self.board!r} is programmed with a {' or '.join(wanted)} bitstream, not "
                              f"{str(self.bitstream)!r}", f"pass the {wanted[0]} file that 'lowbit build ... "
                              f"--board {self.board}' wrote")
        yield str(self.bitstream) if len(names) == 1 else [str(self.bitstream)] * len(names)


def _bitstream(path, board):
    """The bitstream file: ``path`` itself, or the board's bitstream in a 'lowbit build' folder."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p for p in path.glob(f"{board.name}.*") if p.suffix in (".bin", ".bit"))
        if not found:
            raise LowbitError(f"{str(path)!r} holds no bitstream for board {board.name!r}",
                              f"make one with 'lowbit build BUILD --board {board.name} -o {path}'")
        return found[0]
    if not path.is_file():
        raise LowbitError(f"bitstream {str(path)!r} does not exist", "check the path, or make one with 'lowbit build'")
    return path


def program_command(bitstream, board_name):
    """The command the board's platform runs to program ``bitstream``, recorded without running it.

    Raises
    ------
    LowbitError
        If the board has no bitstream flow or platform, or the file is missing or of the wrong kind.
    """
    board = get_board(board_name)
    if not board.bitstream:
        raise LowbitError(f"board {board.name!r} has no open bitstream flow to program",
                          "boards lowbit programs: " + ", ".join(b.name for b in BOARDS.values() if b.bitstream))
    platform = board.platform_class()()
    path = _bitstream(bitstream, board)
    commands = []
    with mock.patch.object(subprocess, "check_call", side_effect=lambda cmd, *a, **k: commands.append(list(cmd))):
        platform.toolchain_program(_Products(path, board.name), path.stem)
    if len(commands) != 1:
        raise LowbitError(f"board {board.name!r}: its platform's programming step ran {len(commands)} commands, "
                          "not one", "program the board with its vendor's tool")
    return commands[0]


def program_board(bitstream, board_name, *, dry_run=False):
    """Program the board; returns the command run (or, with ``dry_run``, the one that would run,
    programmer installed or not).

    Raises
    ------
    LowbitError
        As :func:`program_command`; if the programmer is not installed; or if it fails (no board
        attached, no permission on the USB device): the message carries its last line of output.
    """
    command = program_command(bitstream, board_name)
    tool = command[0]
    if dry_run:
        return command
    if shutil.which(tool) is None:
        raise LowbitError(f"the programmer {tool!r} for board {board_name!r} is not installed or not on PATH",
                          _INSTALL.get(Path(tool).name, f"install {tool}"))
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        said = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        raise LowbitError(f"{Path(tool).name} failed with exit {proc.returncode}"
                          + (f": {said[-1].strip()}" if said else ""),
                          f"check that the {board_name} board is plugged in and that you may use its USB device")
    return command
