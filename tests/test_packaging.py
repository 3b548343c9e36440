"""The built wheel, not just the editable install, must import and run."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tracked_sources(dest):
    """A copy of the files git tracks (or would), so no stale build output can leak into the wheel."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    for name in listed:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def test_wheel_contains_every_subpackage_and_runs(tmp_path, digits_checkpoint):
    src = tracked_sources(tmp_path / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("lowbit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("lowbit/cli.py", "lowbit/core/formats.py", "lowbit/model/train.py", "lowbit/compiler/ir.py", "lowbit/compiler/ops/matmul.py",
                   "lowbit/hw/mvau.py", "lowbit/hw/lanes.py", "lowbit/sim/runner.py", "lowbit/sim/stream_test.py",
                   "lowbit/boards/synth.py"):
        assert module in names, module
    assert any(n.endswith("entry_points.txt") for n in names)

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
                    str(wheel)], check=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    # Every subpackage must come from the wheel, not from the source tree beside it.
    where = subprocess.run([sys.executable, "-c", "import lowbit, lowbit.hw.mvau, lowbit.compiler.ops.matmul as m; "
                            "print(lowbit.__file__); print(m.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    assert all(line.startswith(str(site)) for line in where.stdout.split()), where.stdout
    r = subprocess.run([sys.executable, "-m", "lowbit", "compile", str(digits_checkpoint[0]), "-o",
                        str(tmp_path / "build"), "--target-cycles", "1024"],
                       capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "build" / "lowbit_top.v").is_file()
