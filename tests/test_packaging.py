"""The built wheel, not just the editable install, must import and run."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_every_subpackage_and_runs(tmp_path, digits_checkpoint):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(ROOT)], check=True, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("lowbit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("lowbit/cli.py", "lowbit/formats.py", "lowbit/model/train.py", "lowbit/compiler/ir.py",
                   "lowbit/hw/mvtu.py", "lowbit/sim/runner.py", "lowbit/sim/stream_test.py",
                   "lowbit/boards/synth.py"):
        assert module in names, module
    assert any(n.endswith("entry_points.txt") for n in names)

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
                    str(wheel)], check=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import lowbit.hw.mvtu, lowbit; print(lowbit.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    assert where.stdout.strip().startswith(str(site))
    r = subprocess.run([sys.executable, "-m", "lowbit", "compile", str(digits_checkpoint[0]), "-o",
                        str(tmp_path / "build"), "--target-cycles", "1024"],
                       capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "build" / "lowbit_top.v").is_file()
