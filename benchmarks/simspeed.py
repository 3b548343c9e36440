"""Simulation speed: verified images per second under cocotb + Verilator, against raw Verilator.

The network is SFC (784-256-256-256-10, bipolar weights and activations, FINN's small fully
connected MNIST network) with random +-1 weights and random integer thresholds built directly
as IR, folded so the slowest layer takes 128 cycles per image. Its inputs are the 10,000 MNIST
test images, binarized at 128 (``--data`` names the folder; random +-1 images otherwise, and the
row says so). Every output word is checked against ``graph.hardware_output``:

- ``cocotb``: :func:`lowbit.sim.runner.run_phases`, i.e. the batch harness under cocotb, one
  phase without stalls (``--stalls`` adds a row with 50 % random stalls on both sides).
- ``raw``: the same Verilog built by Verilator with a C++ main and no Python at all, which
  feeds the same words back to back and compares every output word.

Both are timed end to end as one process each (start-up, loading the vectors, simulating,
checking); builds are cached and not counted. The two runs alternate ``--repeat`` times and
each keeps its fastest time, as timing tools do: on a machine shared with other jobs the fastest
run is the one least slowed by them. Every run's time is recorded.

    python -m benchmarks.simspeed [--write] [--data DIR] [--images N] [--repeat R] [--stalls]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lowbit.compiler.codegen import generate_verilog
from lowbit.compiler.ir import BIPOLAR, Folding, Graph, MatMul, MultiThreshold
from lowbit.core.files import atomic_write_text
from lowbit.sim import build, toolchain
from lowbit.sim.runner import Phase, StallConfig, run_phases

from .report import update_section

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "simspeed.json"
NETWORK = "SFC 784-256-256-256-10 W1A1"
DIMS = (784, 256, 256, 256, 10)
# PE x SIMD per layer: 128, 128, 128 and 64 cycles per image.
FOLDINGS = (Folding(32, 49), Folding(16, 32), Folding(16, 32), Folding(5, 8))


def sfc_graph(seed=0):
    """SFC with random bipolar weights and thresholds near the middle of each dot product's range."""
    rng = np.random.default_rng(seed)
    nodes = []
    for k, (mw, mh) in enumerate(zip(DIMS, DIMS[1:])):
        mm = MatMul(f"fc{k}", rng.choice([-1, 1], size=(mh, mw)), "bipolar", BIPOLAR,
                    folding=FOLDINGS[k])
        nodes.append(mm)
        if k < len(DIMS) - 2:
            # Dot products of +-1 vectors have the parity of MW: odd thresholds never tie.
            t = 2 * rng.integers(-mw // 16, mw // 16 + 1, size=(mh, 1)) + 1
            nodes.append(MultiThreshold(f"th{k}", t, mm.out_type))
    return Graph(BIPOLAR, DIMS[0], tuple(nodes))


def load_images(data, n):
    """(images as +-1, source) for the first ``n`` MNIST test images, or random ones without data."""
    if data is not None:
        from lowbit.model.data import load_idx_dataset

        x = load_idx_dataset("mnist", data).x_test[:n]
        return np.where(x >= 128, 1, -1).astype(np.int64), "MNIST test images, binarized at 128"
    rng = np.random.default_rng(1)
    return rng.choice([-1, 1], size=(n, DIMS[0])).astype(np.int64), "random +-1 images"


_RAW_MAIN = r"""
// Raw Verilator run of a lowbit stream design: no Python, no VPI. Feeds every input word back to
// back, keeps the output always ready and compares every output word with the expected one.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <vector>
#include "verilated.h"
#include "V{top}.h"

template <typename T> static void put(T& port, const uint32_t* w) {{
    if constexpr (sizeof(T) > 4) port = (T)w[0] | ((T)w[1] << 32); else port = (T)w[0];
}}
template <std::size_t N> static void put(VlWide<N>& port, const uint32_t* w) {{
    for (std::size_t k = 0; k < N; ++k) port[k] = w[k];
}}
template <typename T> static bool same(const T& port, const uint32_t* w) {{
    if constexpr (sizeof(T) > 4) return port == ((T)w[0] | ((T)w[1] << 32)); else return port == (T)w[0];
}}
template <std::size_t N> static bool same(const VlWide<N>& port, const uint32_t* w) {{
    for (std::size_t k = 0; k < N; ++k) if (port[k] != w[k]) return false;
    return true;
}}
static std::vector<uint32_t> load(const char* path) {{
    std::vector<uint32_t> words;
    FILE* f = std::fopen(path, "rb");
    if (!f) {{ std::perror(path); std::exit(2); }}
    uint32_t buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 4, 4096, f)) > 0) words.insert(words.end(), buf, buf + n);
    std::fclose(f);
    return words;
}}
int main(int argc, char** argv) {{
    const std::size_t iw = {in_words}, ow = {out_words};
    std::vector<uint32_t> in = load(argv[1]), expected = load(argv[2]);
    const std::size_t n_in = in.size() / iw, n_out = expected.size() / ow;
    auto context = std::make_unique<VerilatedContext>();
    auto top = std::make_unique<V{top}>(context.get());
    auto t0 = std::chrono::steady_clock::now();
    top->clk = 0; top->rst = 1; top->i__valid = 0; top->o__ready = 0;
    for (int k = 0; k < 4; ++k) {{ top->clk = 0; top->eval(); top->clk = 1; top->eval(); }}
    top->rst = 0;
    top->o__ready = 1;
    std::size_t sent = 0, got = 0, mismatches = 0;
    uint64_t cycles = 0, quiet = 0;
    if (n_in) put(top->i__payload, &in[0]);
    while (got < n_out && quiet < 100000) {{
        top->i__valid = sent < n_in;
        top->clk = 0; top->eval();
        const bool in_beat = top->i__valid && top->i__ready;
        const bool out_beat = top->o__valid && top->o__ready;
        if (out_beat) {{ if (!same(top->o__payload, &expected[got * ow])) ++mismatches; ++got; }}
        top->clk = 1; top->eval();
        ++cycles;
        quiet = (in_beat || out_beat) ? 0 : quiet + 1;
        if (in_beat && ++sent < n_in) put(top->i__payload, &in[sent * iw]);
    }}
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("{{\"sent\": %zu, \"received\": %zu, \"mismatches\": %zu, \"missing\": %zu, "
                "\"cycles\": %llu, \"loop_seconds\": %.6f}}\n", sent, got, mismatches,
                n_out - got, (unsigned long long)cycles, seconds);
    top->final();
    return 0;
}}
"""


def _words32(values, width):
    """Little-endian 32-bit words of each value, ``ceil(width / 32)`` per value."""
    n = max(1, -(-width // 32))
    out = np.zeros((len(values), n), dtype="<u4")
    for row, v in enumerate(values):
        for k in range(n):
            out[row, k] = (v >> (32 * k)) & 0xFFFFFFFF
    return out


def build_raw(verilog, top, in_width, out_width, cache_dir=None):
    """Build (or reuse) the raw C++ simulator; cached by the hash of everything it is made of."""
    toolchain.verilator_env()
    main = _RAW_MAIN.format(top=top, in_words=max(1, -(-in_width // 32)),
                            out_words=max(1, -(-out_width // 32)))
    # Verilator spells a double underscore in a port name as "___05F" in C++.
    main = main.replace("top->i__", "top->i___05F").replace("top->o__", "top->o___05F")
    import hashlib

    key = hashlib.sha256((verilog + main + toolchain.verilator_version()
                          + toolchain.cxx_version()).encode()).hexdigest()[:24]
    root = Path(cache_dir) if cache_dir else build.cache_root()
    final = root / f"raw-{top}-{key}"
    exe = final / f"V{top}"
    if exe.is_file():
        return exe, 0.0
    import shutil
    import tempfile

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    (tmp / f"{top}.v").write_text(verilog)
    (tmp / "main.cpp").write_text(main)
    cxx = toolchain.cxx_compiler()
    t0 = time.perf_counter()
    env = {**os.environ, "CXXFLAGS": toolchain.build_cxxflags()}
    log = tmp / "build.log"
    with open(log, "w") as out:
        subprocess.run(["verilator", "--cc", "--exe", *build.LINT_WAIVERS, "--top-module", top,
                        "-Mdir", str(tmp / "obj"), f"{top}.v", "main.cpp"],
                       cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
        subprocess.run(["make", "-j", str(os.cpu_count() or 1), "-C", str(tmp / "obj"), "-f",
                        f"V{top}.mk", f"CXX={cxx}", f"LINK={cxx}", f"PYTHON3={sys.executable}",
                        *build._configure_fixes()],
                       env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
    seconds = time.perf_counter() - t0
    shutil.copy2(tmp / "obj" / f"V{top}", tmp / f"V{top}")
    shutil.rmtree(tmp / "obj", ignore_errors=True)
    os.rename(tmp, final)
    return exe, seconds


def run_raw(exe, inputs, expected, in_width, out_width, workdir):
    workdir.mkdir(parents=True, exist_ok=True)
    _words32(inputs, in_width).tofile(workdir / "inputs.bin")
    _words32(expected, out_width).tofile(workdir / "expected.bin")
    t0 = time.perf_counter()
    out = subprocess.run([str(exe), str(workdir / "inputs.bin"), str(workdir / "expected.bin")],
                         capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - t0
    report = json.loads(out.stdout.strip().splitlines()[-1])
    report["seconds"] = seconds
    return report


def measure(data=None, images=10_000, stalls=False, repeat=3, workdir=Path("/tmp/lowbit-simspeed")):
    if repeat < 1:
        raise SystemExit(f"--repeat must be at least 1, not {repeat}")
    graph = sfc_graph()
    x, source = load_images(data, images)
    expected_vectors = graph.hardware_output(x)
    text, top = generate_verilog(graph)
    inputs = top.in_format.pack(x)
    expected = top.out_format.pack(expected_vectors)
    from lowbit.compiler.codegen import TOP_NAME
    from lowbit.sim.harness import design_ports

    ports = design_ports(text, TOP_NAME)
    cycles = top.cycles_per_item

    exe, raw_build = build_raw(text, TOP_NAME, ports.in_width, ports.out_width)
    print(f"raw build: {raw_build:.1f} s" if raw_build else "raw build: cached", file=sys.stderr)

    def raw_run():
        raw = run_raw(exe, inputs, expected, ports.in_width, ports.out_width, workdir)
        if raw["mismatches"] or raw["missing"]:
            raise RuntimeError(f"raw run is not bit-exact: {raw}")
        print(f"raw: {raw['seconds']:.2f} s", file=sys.stderr)
        return raw["seconds"]

    def cocotb_run(label, stall):
        t0 = time.perf_counter()
        job = run_phases(text, TOP_NAME, [Phase("bench", inputs, expected, stall=stall)])
        wall = time.perf_counter() - t0
        phase = job.phase("bench")
        if job.results["mismatches"]:
            raise RuntimeError(f"cocotb run is not bit-exact: {phase['first_mismatches']}")
        print(f"cocotb {label}: {job.seconds:.2f} s run, {wall:.2f} s with build lookup, "
              f"build {job.simulation.build_seconds:.1f} s, {phase['cycles']} cycles, "
              f"{job.results['wakes']} wakes", file=sys.stderr)
        return job

    runs = [("no stalls", None)]
    if stalls:
        runs.append(("50% stalls", StallConfig(in_idle=0.5, out_stall=0.5, max_gap=2 * cycles,
                                               seed=0)))
    raw_seconds, jobs = [], {label: [] for label, _ in runs}
    for _ in range(repeat):  # alternate, so that a burst of load slows both kinds alike
        raw_seconds.append(raw_run())
        for label, stall in runs:
            jobs[label].append(cocotb_run(label, stall))
    raw_best = min(raw_seconds)
    rows = []
    for label, stall in runs:
        job = min(jobs[label], key=lambda j: j.seconds)
        rows.append({
            "network": NETWORK, "inputs": source, "stalls": label, "images": len(x),
            "cycles_per_image": cycles, "sim_cycles": job.phase("bench")["cycles"],
            "seconds": round(job.seconds, 3),
            "images_per_second": round(len(x) / job.seconds, 1),
            "raw_images_per_second": round(len(x) / raw_best, 1) if stall is None else None,
            "raw_seconds": round(raw_best, 3) if stall is None else None,
            "runs": repeat,
            "all_seconds": [round(j.seconds, 3) for j in jobs[label]],
            "all_raw_seconds": [round(t, 3) for t in raw_seconds] if stall is None else None,
            "python_wakes": job.results["wakes"], "mismatches": job.results["mismatches"],
        })
    return rows


def _table(rows):
    lines = ["| network | inputs | stalls | images | cycles/image | seconds | images/s | raw images/s | cocotb/raw |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        raw = r["raw_images_per_second"]
        ratio = f"{r['images_per_second'] / raw:.0%}" if raw else "–"
        lines.append(f"| {r['network']} | {r['inputs']} | {r['stalls']} | {r['images']} | "
                     f"{r['cycles_per_image']} | {r['seconds']:.2f} | {r['images_per_second']:,.0f} | "
                     f"{f'{raw:,.0f}' if raw else '–'} | {ratio} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.simspeed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true",
                        help=f"write {RESULTS.relative_to(ROOT.parent)} and the BENCHMARKS.md table")
    parser.add_argument("--data", help="folder with mnist/ (random +-1 images if omitted)")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3,
                        help="alternate raw and cocotb runs this many times; keep each one's fastest")
    parser.add_argument("--stalls", action="store_true",
                        help="add a cocotb row with 50%% random stalls on both sides")
    args = parser.parse_args(argv)
    rows = measure(args.data, args.images, args.stalls, args.repeat)
    print(_table(rows))
    if args.write:
        atomic_write_text(RESULTS, json.dumps(rows, indent=1) + "\n")
        update_section("simspeed", "## Simulation speed (cocotb + Verilator)", _table(rows))


if __name__ == "__main__":
    main()
