"""Training in every weight format, resuming, evaluation and the accuracy sweep, on digits."""

import json

import numpy as np
import pytest
import torch

from lowbit.cli import main
from lowbit.core.errors import LowbitError
from lowbit.model.checkpoint import load_checkpoint
from lowbit.model.data import Thermometer
from lowbit.sweep_accuracy import pareto_front
from lowbit.training import encode_inputs, parse_act, parse_arch, weight_memory


def run(capsys, *args):
    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:  # argparse refuses bad option values itself
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


# (options, expected formats entry, expected input encoding, the accuracy it must at least reach
# after EPOCHS epochs on digits' 360 test images; chance is 0.1)
CASES = {
    "ternary-u2": (["--arch", "mlp:32", "--format", "ternary", "--act-bits", "2"],
                   {"weights": "ternary", "activations": "u2", "p": None}, "thermometer", 0.85),
    "tiled-bipolar": (["--arch", "mlp:256", "--format", "tiled", "--p", "4"],
                      {"weights": "bipolar", "activations": "bipolar", "p": 4}, "thermometer", 0.8),
    "binary01-float": (["--arch", "mlp:32", "--format", "binary01", "--act-bits", "float"],
                       {"weights": "binary01", "activations": "float", "p": None}, "float", 0.7),
    "fp32-float": (["--arch", "mlp:32", "--format", "fp32", "--act-bits", "float"],
                   {"weights": "fp32", "activations": "float", "p": None}, "float", 0.9),
    "cnn-levels5": (["--arch", "cnn:8", "--format", "levels5", "--act-bits", "u2", "--batch-size", "32"],
                    {"weights": "levels5", "activations": "u2", "p": None}, "thermometer", 0.8),
    "vit-pow2": (["--arch", "vit:dim=32,depth=1,heads=2,mlp_dim=64", "--format", "pow2",
                  "--act-bits", "float", "--lr", "0.01"],
                 {"weights": "pow2", "activations": "float", "p": None}, "float", 0.7),
}
# Epochs per case: 3, but 6 for the ViT, whose accuracy after 3 epochs swings between 0.41 and
# 0.87 with the seed and the thread count (float sums in another order); after 6 it is 0.83 to
# 0.92 over seeds 1 to 4 on one thread.
EPOCHS = {"vit-pow2": 6}


@pytest.mark.parametrize("name", sorted(CASES))
def test_train_cli_writes_a_checkpoint_with_its_formats_and_eval_agrees(tmp_path, capsys, name):
    options, formats, encoding, floor = CASES[name]
    epochs = EPOCHS.get(name, 3)
    ckpt = tmp_path / "m.pt"
    rc, out, err = run(capsys, "train", *options, "--epochs", epochs, "--seed", 1, "-o", ckpt)
    assert rc == 0, err
    model, meta = load_checkpoint(ckpt)
    assert meta["formats"] == formats
    assert meta["input"]["encoding"] == encoding
    assert meta["dataset"] == {"name": "digits", "seed": 1}
    assert meta["metrics"]["epochs"] == epochs and meta["resume"]["epoch"] == epochs
    acc = meta["metrics"]["test_accuracy"]
    assert acc >= floor, acc
    assert f"test accuracy {acc:.4f} after {epochs} epochs" in out
    rc, out, err = run(capsys, "eval", ckpt)
    assert rc == 0, err
    assert f"digits test accuracy {acc:.4f} on 360 images" in out


def test_tiled_layer_is_really_tiled(tmp_path, capsys):
    ckpt = tmp_path / "t.pt"
    assert run(capsys, "train", "--arch", "mlp:256", "--format", "tiled", "--p", "4", "--epochs", 1,
               "-o", ckpt)[0] == 0
    model, _ = load_checkpoint(ckpt)
    first = model.weight_layers[0]  # 256 thermometer inputs x 256 = 65536 weights: tiled
    assert first.copies == 4
    w = first.integer_weights().levels.reshape(4, -1)
    assert all(torch.equal(w[0], w[i]) for i in range(4))
    assert model.weight_layers[1].copies == 1  # 2560 weights: below min_compress_size


@pytest.mark.parametrize("recipe", ["plain", "augmented-distilled"])
def test_interrupted_run_resumes_to_the_same_weights_as_an_uninterrupted_run(tmp_path, capsys, monkeypatch, recipe):
    common = ["--arch", "mlp:32", "--format", "levels5", "--act-bits", "2", "--seed", "3", "--epochs", "3"]
    if recipe != "plain":  # the flips, shifts and teacher's logits must come out the same after a resume
        teacher = tmp_path / "teacher.pt"
        assert run(capsys, "train", "--arch", "cnn:4", "--format", "fp32", "--act-bits", "float", "--epochs", 1,
                   "--seed", 3, "-o", teacher)[0] == 0
        common = ["--arch", "cnn:4", "--format", "ternary", "--act-bits", "2", "--input-encoding", "pixels",
                  "--augment", "flip,shift=1", "--teacher", teacher, "--seed", "3", "--epochs", "3"]
    full, cut = tmp_path / "full.pt", tmp_path / "cut.pt"
    assert run(capsys, "train", *common, "-o", full)[0] == 0

    from lowbit.model import train as train_module
    real_train = train_module.train

    def interrupted_after_one_epoch(*args, on_epoch, **kwargs):
        def hook(state):
            on_epoch(state)  # the checkpoint of epoch 1 is written, then Ctrl-C
            raise KeyboardInterrupt
        return real_train(*args, on_epoch=hook, **kwargs)

    monkeypatch.setattr(train_module, "train", interrupted_after_one_epoch)
    rc, _, err = run(capsys, "train", *common, "-o", cut)
    assert rc == 130 and f"continue with: lowbit train --resume {cut} --epochs N" in err
    _, meta = load_checkpoint(cut)
    assert meta["resume"]["epoch"] == 1 and meta["metrics"]["epochs"] == 1
    monkeypatch.setattr(train_module, "train", real_train)

    rc, out, err = run(capsys, "train", "--resume", cut, "--epochs", 3)
    assert rc == 0, err
    assert "after 3 epochs" in out
    a, ma = load_checkpoint(full)
    b, mb = load_checkpoint(cut)
    assert mb["resume"]["losses"] == ma["resume"]["losses"]
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(ta, tb), name
    assert mb["metrics"]["test_accuracy"] == ma["metrics"]["test_accuracy"]


def test_a_run_interrupted_before_its_first_epoch_names_no_checkpoint_to_resume(tmp_path, capsys, monkeypatch):
    from lowbit.model import train as train_module

    def interrupted_at_once(*args, **kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "m.pt"
    assert run(capsys, "train", "--arch", "mlp:8", "--epochs", 1, "-o", out)[0] == 0
    earlier = out.read_bytes()  # a checkpoint of an earlier run is not this run's to resume
    monkeypatch.setattr(train_module, "train", interrupted_at_once)
    for path in (tmp_path / "new.pt", out):
        rc, _, err = run(capsys, "train", "--arch", "mlp:16", "--epochs", 2, "-o", path)
        assert rc == 130 and "interrupted before the first epoch ended; no checkpoint was written" in err, err
        assert "--resume" not in err
    assert not (tmp_path / "new.pt").exists() and out.read_bytes() == earlier


def test_resume_errors(tmp_path, capsys):
    ckpt = tmp_path / "m.pt"
    assert run(capsys, "train", "--arch", "mlp:16", "--epochs", 2, "-o", ckpt)[0] == 0
    rc, _, err = run(capsys, "train", "--resume", ckpt, "--epochs", 3, "--format", "ternary")
    assert rc == 2 and "--format cannot be changed when resuming" in err
    rc, _, err = run(capsys, "train", "--resume", ckpt, "--epochs", 1)
    assert rc == 2 and "already trained 2 epochs, more than --epochs 1" in err
    rc, _, err = run(capsys, "train", "--resume", ckpt)
    assert rc == 2 and "--resume needs --epochs" in err
    rc, _, err = run(capsys, "train", "--resume", tmp_path / "missing.pt", "--epochs", 3)
    assert rc == 2 and "does not exist" in err


@pytest.mark.parametrize("args, message", [
    (["--format", "tiled"], "format 'tiled' needs the tile copy count"),
    (["--format", "tiled", "--p", "3"], "format 'tiled' needs p in {2, 4, 8"),
    (["--format", "ternary", "--p", "4"], "--p 4 is for tiled weights, not format 'ternary'"),
    (["--format", "expq"], "format 'expq' is applied after training"),
    (["--format", "septenary"], "unknown weight format 'septenary'"),
    (["--act-bits", "9"], "unknown activation format 'u9'"),
    (["--arch", "rnn:4"], "unknown architecture 'rnn:4'"),
    (["--arch", "vit:width=3"], "bad ViT option 'width=3'"),
    (["--arch", "mlp:4", "--hidden", "8"], "give either --arch or --hidden"),
    (["--epochs", "0"], "argument --epochs: must be an integer >= 1, not '0'"),
    (["--format", "ternary", "--min-compress-size", "512"],
     "a minimum compressed layer size (512) is for tiled weights, not format 'ternary'"),
    (["--format", "tiled", "--p", "4", "--min-compress-size", "0"], "--min-compress-size: must be an integer >= 1"),
    # refused before the first epoch: the head's 640 weights tiled in four copies of 2.5 rows
    (["--arch", "mlp:64", "--act-bits", "2", "--format", "tiled", "--p", "4", "--min-compress-size", "512"],
     "tiled layer 'stages.1.layer' has 10 output channels, which its p = 4 copies do not split into whole channels"),
])
def test_bad_train_options_exit_2_and_write_nothing(tmp_path, capsys, args, message):
    rc, _, err = run(capsys, "train", *args, "-o", tmp_path / "m.pt")
    assert rc == 2 and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_eval_with_ptq_on_a_float_checkpoint_only(tmp_path, capsys):
    fp32, binary = tmp_path / "f.pt", tmp_path / "b.pt"
    assert run(capsys, "train", "--arch", "mlp:32", "--format", "fp32", "--act-bits", "float",
               "--epochs", 3, "-o", fp32)[0] == 0
    _, meta = load_checkpoint(fp32)
    rc, out, err = run(capsys, "eval", fp32, "--ptq-bits", 4)
    assert rc == 0, err
    acc = float(out.split("test accuracy ")[1].split()[0])
    assert "(expq 4-bit, weights-only, 4 bits/weight" in out
    assert abs(acc - meta["metrics"]["test_accuracy"]) < 0.1  # 4 bits keeps most of the accuracy
    rc, out, err = run(capsys, "eval", fp32, "--ptq-bits", 3, "--ptq-method", "linear")
    assert rc == 0 and "linear-ptq 3-bit" in out
    rc, _, err = run(capsys, "eval", fp32, "--ptq-bits", 7)
    assert rc == 2 and "PTQ bits must be an integer from 2 to 6, not 7" in err
    assert run(capsys, "train", "--arch", "mlp:16", "--epochs", 1, "-o", binary)[0] == 0
    rc, _, err = run(capsys, "eval", binary, "--ptq-bits", 3)
    assert rc == 2 and "post-training quantization needs a float model, not weight format 'bipolar'" in err


def test_sweep_accuracy_writes_table_json_and_plot(tmp_path, capsys):
    out_dir = tmp_path / "sweep"
    rc, out, err = run(capsys, "sweep-accuracy", "-o", out_dir, "--arch", "mlp:256", "--epochs", 1,
                       "--formats", "fp32,bipolar,tiled", "--ptq-bits", "3")
    assert rc == 0, err
    rows = json.loads((out_dir / "accuracy.json").read_text())
    labels = [(r["setting"], r["format"], r["ptq_bits"]) for r in rows]
    assert labels == [("weights-only", "fp32", None), ("weights-only", "expq", 3),
                      ("weights-only", "linear-ptq", 3), ("weights-only", "bipolar", None),
                      ("weights-only", "tiled", None), ("hardware", "bipolar", None),
                      ("hardware", "tiled", None)]
    by = {(r["setting"], r["format"], r["ptq_bits"]): r for r in rows}
    # digits, weights-only: 64 float pixels; 64*256 weights and 256*10 in the head.
    assert by[("weights-only", "fp32", None)]["weight_memory_bytes"] == (64 * 256 + 2560) * 4
    assert by[("weights-only", "expq", 3)]["weight_memory_bytes"] == (64 * 256 + 2560) * 3 // 8
    # hardware: 4 thermometer levels, 256*256 = 65536 weights tiled p=4 (+ 4 float32 alphas).
    assert by[("hardware", "tiled", None)]["weight_memory_bytes"] == (65536 // 4 + 4 * 32 + 2560) // 8
    assert by[("hardware", "bipolar", None)]["act"] == "bipolar"
    table = (out_dir / "accuracy.md").read_text()
    assert table.count("\n") == 2 + len(rows) and "| tiled p=4 | hardware | bipolar |" in table
    assert (out_dir / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (out_dir / "checkpoints").iterdir()) == [
        "hardware-bipolar.pt", "hardware-tiled.pt", "weights-only-bipolar.pt", "weights-only-fp32.pt",
        "weights-only-tiled.pt"]


def test_sweep_accuracy_on_two_workers_writes_what_one_process_writes(tmp_path, capsys):
    args = ["--arch", "mlp:16", "--epochs", "1", "--formats", "fp32,ternary", "--ptq-bits", "2"]
    rc, _, err = run(capsys, "sweep-accuracy", "-o", tmp_path / "one", "--workers", "1", *args)
    assert rc == 0, err
    rc, _, err = run(capsys, "sweep-accuracy", "-o", tmp_path / "two", "--workers", "2", *args)
    assert rc == 0, err
    files = sorted(str(p.relative_to(tmp_path / "one")) for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert "accuracy.json" in files and "checkpoints/hardware-ternary.pt" in files
    for name in files:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_sweep_accuracy_reports_a_failed_training_and_keeps_the_rest(tmp_path, capsys, monkeypatch):
    from lowbit import sweep_accuracy

    real = sweep_accuracy.train_accuracy_job

    def flaky(job):
        if job.fmt == "ternary" and job.setting == "hardware":
            raise RuntimeError("out of memory on this worker")
        return real(job)

    monkeypatch.setattr(sweep_accuracy, "train_accuracy_job", flaky)
    out_dir = tmp_path / "sweep"
    rc, out, err = run(capsys, "sweep-accuracy", "-o", out_dir, "--arch", "mlp:16", "--epochs", "1",
                       "--formats", "bipolar,ternary", "--settings", "hardware", "--ptq-bits", "none",
                       "--workers", "1")
    assert rc == 1
    assert "hardware ternary failed: RuntimeError: out of memory on this worker" in err
    rows = json.loads((out_dir / "accuracy.json").read_text())
    assert [(r["setting"], r["format"]) for r in rows] == [("hardware", "bipolar")]
    failed = json.loads((out_dir / "failed.json").read_text())
    assert failed[0]["spec"]["fmt"] == "ternary" and "out of memory" in failed[0]["traceback"]
    assert "## Failed jobs" in (out_dir / "accuracy.md").read_text()


def test_sweep_rejects_bad_formats_and_settings(tmp_path, capsys):
    rc, _, err = run(capsys, "sweep-accuracy", "-o", tmp_path, "--formats", "bipolar,octal")
    assert rc == 2 and "unknown weight format 'octal' for the sweep" in err
    rc, _, err = run(capsys, "sweep-accuracy", "-o", tmp_path, "--settings", "fpga")
    assert rc == 2 and "unknown setting 'fpga'" in err
    rc, _, err = run(capsys, "sweep-accuracy", "-o", tmp_path, "--formats", "bipolar")
    assert rc == 2 and "post-training quantization rows need the fp32 weights-only model" in err


def test_pareto_front_keeps_only_unbeaten_rows():
    rows = [{"weight_memory_bytes": m, "accuracy": a, "name": n} for m, a, n in
            [(10, 0.90, "a"), (5, 0.80, "b"), (20, 0.95, "c"), (20, 0.85, "d"), (8, 0.80, "e"),
             (40, 0.95, "f")]]
    assert [r["name"] for r in pareto_front(rows)] == ["b", "a", "c"]


def test_weight_memory_counts_storage_bits_and_information():
    from lowbit.model.arch import build_model
    m = build_model({"kind": "mlp", "in_features": 100, "hidden": [20], "classes": 10,
                     "weight_format": "ternary", "act": "u2"})
    mem = weight_memory(m)
    assert mem["weights"] == 2200 and mem["bits"] == 2 * 2200 and mem["bytes"] == 550
    assert mem["bits_per_weight"] == pytest.approx(np.log2(3))
    b = build_model({"kind": "mlp", "in_features": 100, "hidden": [20], "classes": 10,
                     "weight_format": "binary01", "act": "bipolar"})
    assert weight_memory(b)["bits"] == 2000 + 20 + 200 + 10  # {0,1} biases are stored too


def test_parse_arch_and_act():
    assert parse_arch("mlp:256,256") == {"kind": "mlp", "hidden": [256, 256]}
    assert parse_arch("cnn") == {"kind": "cnn", "channels": [16, 32], "fc": []}
    assert parse_arch("cnn:8,16:32") == {"kind": "cnn", "channels": [8, 16], "fc": [32]}
    assert parse_arch("vit:dim=32,patch=7") == {"kind": "vit", "dim": 32, "patch": 7}
    assert [parse_act(a) for a in ("float", "bipolar", "2", "u4")] == ["float", "bipolar", "u2", "u4"]
    with pytest.raises(LowbitError, match="hidden activations are bipolar or unsigned, not 's4'"):
        parse_act("s4")
    with pytest.raises(LowbitError, match="MLP hidden widths must be positive"):
        parse_arch("mlp:0")


def test_thermometer_channels_of_a_conv_input_are_the_levels_of_each_pixel():
    enc = {**Thermometer((1, 2)).to_dict(), "image_shape": [2, 2, 1]}
    x = np.array([[0, 1, 2, 3]])
    flat = encode_inputs(x, enc, "mlp")
    assert flat.tolist() == [[-1, -1, 1, -1, 1, 1, 1, 1]]
    img = encode_inputs(x, enc, "cnn")
    assert img.shape == (1, 2, 2, 2)
    assert img[0, 0].tolist() == [[-1, 1], [1, 1]] and img[0, 1].tolist() == [[-1, -1], [1, 1]]
    fl = encode_inputs(x, {"encoding": "float", "max_value": 3, "image_shape": [2, 2, 1]}, "cnn")
    assert fl.dtype == np.float32
    assert np.allclose(fl[0, 0], [[0, 1 / 3], [2 / 3, 1]])


def test_missing_dataset_files_exit_2_with_the_loader_message(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LOWBIT_DATA", raising=False)
    out = tmp_path / "out"
    rc, _, err = run(capsys, "train", "--dataset", "mnist", "--data", tmp_path / "nowhere", "-o", out / "m.pt")
    assert rc == 2 and "MNIST files not found in" in err and "pass --data DIR or set LOWBIT_DATA" in err
    rc, _, err = run(capsys, "train", "--dataset", "mnist", "-o", out / "m.pt")
    assert rc == 2 and "no data folder given for MNIST and LOWBIT_DATA is not set" in err
    rc, _, err = run(capsys, "train", "--dataset", "cifar10", "-o", out / "m.pt")
    assert rc == 2 and "dataset 'cifar10' has no thermometer code for the hardware setting yet" in err
    assert "--input-encoding pixels" in err
    assert not out.exists()


@pytest.mark.parametrize("options, lanes", [
    (["--format", "ternary", "--act-bits", "2"], ["add-sub-skip", "add-sub-skip"]),
    (["--format", "bipolar", "--head-format", "levels17"], ["add-sub", "lut-multiply"]),
], ids=["ternary", "bipolar-levels17-head"])
def test_a_cnn_on_integer_pixels_trains_compiles_and_runs_bit_exact(tmp_path, capsys, options, lanes):
    """``--input-encoding pixels``: the first layer takes the 5-bit digits pixels, in PyTorch, the IR
    and the hardware alike; ``--head-format`` gives the last layer a lane of its own."""
    from lowbit.flow import compile_checkpoint, simulate_build

    ckpt = tmp_path / "m.pt"
    rc, out, err = run(capsys, "train", "--arch", "cnn:8+pad=1", *options, "--input-encoding", "pixels",
                       "--epochs", 3, "-o", ckpt)
    assert rc == 0, err
    model, meta = load_checkpoint(ckpt)
    assert meta["input"] == {"encoding": "pixels", "bits": 5, "max_value": 16, "image_shape": [8, 8, 1]}
    assert model.arch["input"] == "u5" and model.arch["in_shape"] == [1, 8, 8]
    assert meta["formats"].get("head") == model.arch.get("head_format")
    assert meta["metrics"]["test_accuracy"] >= 0.7
    manifest, check = compile_checkpoint(ckpt, tmp_path / "build")
    assert [layer["lane"] for layer in manifest["layers"] if "lane" in layer] == lanes
    assert (check["prediction_disagreements"], check["logit_mismatches"]) == (0, 0)
    assert not any(check["activation_mismatches"].values())
    assert check["torch_accuracy"] == meta["metrics"]["test_accuracy"]
    assert manifest["layers"][0]["in_format"] == {"kind": "uint", "bits": 5, "count": 1}
    sim = simulate_build(tmp_path / "build")
    assert (sim["images"], sim["mismatches"]) == (360, 0)
    assert sim["hw_accuracy"] == check["torch_accuracy"]
    assert sim["cycles_measured"] == sim["cycles_predicted"]


@pytest.mark.parametrize("args, message", [
    (["--act-bits", "float"], "--input-encoding pixels is for the hardware setting"),
    (["--act-bits", "2", "--arch", "mlp:8"], None),
])
def test_pixel_inputs_in_the_weights_only_setting_exit_2(tmp_path, capsys, args, message):
    rc, _, err = run(capsys, "train", "--input-encoding", "pixels", *args, "--epochs", 1, "-o", tmp_path / "m.pt")
    if message is None:  # an MLP takes the pixels as well
        assert rc == 0, err
        assert load_checkpoint(tmp_path / "m.pt")[0].arch["input"] == "u5"
    else:
        assert rc == 2 and message in err, err
        assert list(tmp_path.iterdir()) == []


def test_augmentation_flips_and_shifts_with_the_background_filled_in():
    from lowbit.model.train import augment_batch

    x = torch.arange(2 * 1 * 3 * 4, dtype=torch.float32).reshape(2, 1, 3, 4) + 1
    gen = torch.Generator().manual_seed(0)
    flipped = augment_batch(x, {"flip": True}, gen, 0.0)
    for k in range(2):  # each image is itself or its mirror
        assert torch.equal(flipped[k], x[k]) or torch.equal(flipped[k], x[k].flip(2))
    seen = set()
    for _ in range(40):
        y = augment_batch(x, {"shift": 1}, gen, -5.0)
        for k in range(2):
            # The image moved by (dy, dx) in -1..1: what stays inside is the original, the rest is fill.
            matches = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                       if torch.equal(y[k], _shifted(x[k], dy, dx, -5.0))]
            assert len(matches) == 1
            seen.add(matches[0])
    assert len(seen) == 9


def _shifted(img, dy, dx, fill):
    out = torch.full_like(img, fill)
    _, h, w = img.shape
    for r in range(h):
        for c in range(w):
            if 0 <= r - dy < h and 0 <= c - dx < w:
                out[:, r, c] = img[:, r - dy, c - dx]
    return out


def test_distillation_loss_is_cross_entropy_without_a_teacher_and_zero_kl_against_itself():
    from lowbit.model.train import distillation_loss

    logits, labels = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, 3.0]]), torch.tensor([0, 2])
    ce = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.equal(distillation_loss(logits, labels, None, 0.5, 4.0), ce)
    assert torch.allclose(distillation_loss(logits, labels, logits, 0.5, 4.0), 0.5 * ce)
    other = torch.tensor([[0.0, 3.0, 0.0], [3.0, 0.0, 0.0]])
    assert distillation_loss(logits, labels, other, 0.5, 4.0) > 0.5 * ce + 0.1


@pytest.mark.parametrize("args, message", [
    (["--arch", "mlp:8", "--augment", "flip"], "augmentation flips and shifts images; an mlp takes flat vectors"),
    (["--arch", "cnn:4", "--augment", "flop"], "bad augmentation 'flop'"),
    (["--arch", "cnn:4", "--augment", "shift=9"], "bad augmentation 'shift=9'"),
    (["--arch", "cnn:4", "--augment", "shift=²"], "bad augmentation 'shift=²'"),
    (["--arch", "cnn:4", "--augment", "shift=1,shift=2"], "names 'shift' twice"),
    (["--arch", "cnn:4", "--augment", "flip,"], "bad augmentation ''"),
    (["--arch", "cnn:4", "--augment", "shift=4"], "a shift of 4 pixels moves 8x8 images half out of sight"),
    (["--act-bits", "float", "--input-encoding", "thermometer"], "--input-encoding thermometer is for the hardware"),
    (["--arch", "cnn:4", "--teacher", "."], "teacher checkpoint '.' is a folder"),
    (["--arch", "cnn:4", "--teacher", ""], "teacher checkpoint '' does not exist"),
    (["--arch", "cnn:4", "--teacher", "missing.pt"], "teacher checkpoint 'missing.pt' does not exist"),
    (["--arch", "cnn:4", "--head-format", "expq"], "the head format must be a trainable level-set format, not 'expq'"),
    (["--arch", "cnn:4", "--format", "binary01", "--head-format", "levels5"],
     "a head format ('levels5') is for mlp and cnn networks of the level-set formats"),
    (["--arch", "vit", "--act-bits", "float", "--head-format", "levels5"], "not a vit of weight format 'bipolar'"),
])
def test_bad_recipes_exit_2_and_write_nothing(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    rc, _, err = run(capsys, "train", *args, "--epochs", 1, "-o", tmp_path / "m.pt")
    assert rc == 2 and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_resumed_run_never_writes_over_its_teacher_and_names_a_lost_one(tmp_path, capsys):
    teacher, student = tmp_path / "t.pt", tmp_path / "s.pt"
    assert run(capsys, "train", "--arch", "cnn:4", "--format", "fp32", "--act-bits", "float", "--epochs", 1,
               "-o", teacher)[0] == 0
    assert run(capsys, "train", "--arch", "cnn:4", "--input-encoding", "pixels", "--teacher", teacher,
               "--epochs", 1, "-o", student)[0] == 0
    before = teacher.read_bytes()
    rc, _, err = run(capsys, "train", "--resume", student, "--epochs", 2, "-o", teacher)
    assert rc == 2 and f"the output {str(teacher)!r} is the command's input" in err, err
    assert teacher.read_bytes() == before
    teacher.rename(tmp_path / "elsewhere.pt")
    rc, _, err = run(capsys, "train", "--resume", student, "--epochs", 2)
    assert rc == 2 and "which this training distills from, is gone" in err and "restore it at that path" in err
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    rc, _, err = run(capsys, "train", "--arch", "cnn:4", "--input-encoding", "pixels", "--teacher",
                     tmp_path / "notes.txt", "--epochs", 1, "-o", tmp_path / "x.pt")
    assert rc == 2 and "teacher checkpoint" in err and "cannot be read" in err, err
    assert not (tmp_path / "x.pt").exists()


def test_a_teacher_on_thermometer_inputs_cannot_teach_from_float_pixels(tmp_path, capsys):
    teacher = tmp_path / "t.pt"
    assert run(capsys, "train", "--arch", "cnn:4", "--format", "fp32", "--act-bits", "float", "--epochs", 1,
               "-o", teacher)[0] == 0
    rc, _, err = run(capsys, "train", "--arch", "cnn:4", "--format", "ternary", "--act-bits", "2", "--teacher", teacher,
                     "--epochs", 1, "-o", tmp_path / "s.pt")
    assert rc == 2 and "which cannot be made from the student's" in err, err
    # Another seed splits digits otherwise: the teacher has seen the student's test images.
    rc, _, err = run(capsys, "train", "--arch", "cnn:4", "--format", "ternary", "--act-bits", "2", "--teacher", teacher,
                     "--input-encoding", "pixels", "--seed", 1, "--epochs", 1, "-o", tmp_path / "s.pt")
    assert rc == 2 and "not on the 'digits' training split of this run (seed 1)" in err, err
    # An mlp student takes flat vectors, which a cnn teacher cannot.
    rc, _, err = run(capsys, "train", "--arch", "mlp:8", "--format", "fp32", "--act-bits", "float", "--teacher",
                     teacher, "--epochs", 1, "-o", tmp_path / "s.pt")
    assert rc == 2 and "is a cnn, which takes images, and the student is an mlp" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.pt"]
