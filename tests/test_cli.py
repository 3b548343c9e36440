import subprocess
import sys

import pytest


def lowbit(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "lowbit", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


def test_folding_that_does_not_divide_exits_2_and_writes_nothing(tmp_path, digits_checkpoint):
    ckpt, _ = digits_checkpoint
    r = lowbit("compile", ckpt, "-o", tmp_path / "build", "--folding", "3x1,1x1,1x1")
    assert r.returncode == 2
    assert "fc0: PE=3 does not divide the 64 output rows (MH)" in r.stderr
    assert "fix: choose PE from [1, 2, 4, 8, 16, 32, 64]" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_malformed_folding_and_wrong_count_exit_2(tmp_path, digits_checkpoint):
    ckpt, _ = digits_checkpoint
    r = lowbit("compile", ckpt, "-o", tmp_path / "b", "--folding", "4by16,1x1,1x1")
    assert r.returncode == 2 and "folding entry '4by16' for layer fc0 is not PExSIMD" in r.stderr
    r = lowbit("compile", ckpt, "-o", tmp_path / "b", "--folding", "1x1")
    assert r.returncode == 2 and "gives 1 entries but the model has 3 layers" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_compile_success_prints_cycles(tmp_path, digits_checkpoint):
    ckpt, _ = digits_checkpoint
    r = lowbit("compile", ckpt, "-o", tmp_path / "b", "--target-cycles", "512")
    assert r.returncode == 0, r.stderr
    assert "0 disagreements" in r.stdout
    assert (tmp_path / "b" / "manifest.json").is_file()


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"\x00garbage", "is corrupt or truncated"),
])
def test_bad_checkpoint_exits_2(tmp_path, content, message):
    ckpt = tmp_path / "model.pt"
    if content is not None:
        ckpt.write_bytes(content)
    r = lowbit("compile", ckpt, "-o", tmp_path / "b")
    assert r.returncode == 2
    assert message in r.stderr
    assert not (tmp_path / "b").exists()


def test_sim_of_a_folder_that_is_not_a_build_exits_2(tmp_path):
    r = lowbit("sim", tmp_path)
    assert r.returncode == 2 and "is not a build folder (no manifest.json)" in r.stderr
