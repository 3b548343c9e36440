"""Synthesis per engine: a build's Verilog cut at its engines, each engine synthesized out of
context as its own job, and the counts added up.

A network's engines are independent modules joined by streams, so each one is synthesized alone
(:func:`lowbit.boards.synth.synthesize`, cached by its own text) as a job of an
:class:`lowbit.core.executor.Executor`. Changing one layer changes one engine's text, so only that
engine is synthesized again. An engine's text is made independent of where it sits in the design
before it is hashed: its module and submodules are renamed from ``lowbit_top.network.engine3...``
to ``engine...``, and the numbers that the Verilog writer counts across the whole file are counted
again within the engine. What is not an engine (the top's wiring, the AXI-Stream adapter) is
synthesized as one more part, with the engines as black boxes.

On xc7 the flow maps each PE row module on its own already (:data:`lowbit.boards.synth.KEEP_MODULES`:
no logic crosses a row's ports), so the rows are jobs of their own too, the engine around them
a black-box shell. A row takes its weights and thresholds as inputs, so the rows of one engine,
and of engines of the same shape, are the same text: one job, counted once per instance. The
counts are those of the whole engine in that flow.

Out of context, no logic is shared or removed across engine boundaries; the flat synthesis
(:func:`synthesize` of the whole file) can do both, and ``benchmarks/scale.py`` reports how far
the two totals differ.
"""

import hashlib
import re
from dataclasses import dataclass

from lowbit.core.errors import LowbitError
from lowbit.core.executor import Executor

from .synth import read_verilog, summarize, synthesize

__all__ = ["EnginePart", "SynthesisPlan", "split_engines", "synthesize_engines", "GLUE"]

# The part that holds everything that is not an engine.
GLUE = "glue"

# A module of Amaranth's Verilog: optional attribute lines, ``module NAME (ports);`` ... ``endmodule``.
_MODULE = re.compile(r"((?:^\(\*[^\n]*\*\)\n)*)^module (\\\S+|[A-Za-z_][A-Za-z0-9_$]*) ?\(.*?^endmodule\n",
                     re.M | re.S)
# A module's header, from ``module`` to the ``;`` after its port list.
_HEADER = re.compile(r"^module [^;]*;", re.M)
# The last component of an engine module's hierarchical name (lowbit.hw.network names them so).
_ENGINE = re.compile(r"engine\d+")
# PE row modules (lowbit.hw.mvau), which the xc7 flow keeps apart.
_ROW = re.compile(r".*_row")
# Names that the Verilog writer numbers across the whole file.
_COUNTED = re.compile(r"\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+")


@dataclass(frozen=True)
class EnginePart:
    """One out-of-context synthesis job: a module's Verilog text (with its submodules) and its top."""
    text: str
    top: str
    family: str
    cache_dir: object = None  # None: the worker's own cache

    @property
    def digest(self):
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class SynthesisPlan:
    """The jobs of a per-engine synthesis and how their counts make each part's.

    ``jobs`` are distinct (a text shared by several instances is one job); ``parts`` maps each
    reported part (``engine0``..., :data:`GLUE`) to ``(job index, instances, black boxes)``
    triples, the black boxes being cell types of the job's result that stand for other jobs.
    """
    jobs: tuple
    parts: dict


def _modules(text):
    """``{name: module text}`` in file order, names without the escaping backslash."""
    found = {m.group(2).lstrip("\\"): m.group(0) for m in _MODULE.finditer(text)}
    if not found:
        raise LowbitError("the Verilog holds no module", "pass the Verilog of a lowbit build")
    return found


def _renamed(texts, old, new):
    """``texts`` joined, with module ``old`` and its submodules renamed ``new``, ``new.``..., and
    the file-wide counted names numbered again from 1 in order of appearance."""
    own = re.compile(re.escape("\\" + old) + r"(?=[ .])")
    text = "".join(own.sub("\\\\" + new, t) for t in texts)
    numbers = {}
    return _COUNTED.sub(lambda m: numbers.setdefault(m.group(0), f"\\$auto$part${len(numbers) + 1}"), text)


def _black_box(module_text):
    """A black-box declaration of a module: its header (which the Verilog writer wraps over
    several lines when the port list is long) and port directions, no body."""
    header = _HEADER.search(module_text).group(0)
    ports = [line for line in module_text.splitlines() if line.startswith(("  input ", "  output ", "  inout "))]
    return "\n".join(["(* blackbox *)", header, *ports, "endmodule", ""])


def _below(name, modules):
    """``name`` and its submodules, by hierarchical name."""
    return [m for m in modules if m == name or m.startswith(name + ".")]


def split_engines(verilog, top, family, cache_dir=None):
    """The :class:`SynthesisPlan` of a build's Verilog: one part per engine, named and ordered as
    the network numbers them (``engine0``, ``engine1``...), then
    :data:`GLUE` (every other module, the engines as black boxes); on xc7 the PE rows are jobs
    of their own, shared by every instance of the same row."""
    modules = _modules(read_verilog(verilog))
    if top not in modules:
        raise LowbitError(f"the Verilog has no module {top!r}", "pass the build's own Verilog and top")
    # An engine is a module named ...engineN whose enclosing modules are not engines (a residual
    # block's body engines belong to the block).
    engines = []
    for name in modules:
        path = name.split(".")
        if _ENGINE.fullmatch(path[-1]) and not any(".".join(path[:k]) in engines for k in range(1, len(path))):
            engines.append(name)
    # Parts are named and ordered by the engines' own numbers, which the file orders as text
    # (engine10 before engine2).
    engines.sort(key=lambda name: int(name.rsplit("engine", 1)[1]))
    if not engines:
        raise LowbitError(f"the Verilog of {top!r} has no engine modules (…engineN)",
                          "pass the Verilog of a lowbit build, or synthesize it flat (--flat)")
    jobs, index, parts = [], {}, {}

    def job(text, job_top):
        """The index of the job of ``text``, a new one unless that text has one."""
        part = EnginePart(text, job_top, family, cache_dir)
        if part.digest not in index:
            index[part.digest] = len(jobs)
            jobs.append(part)
        return index[part.digest]

    for engine in engines:
        names = _below(engine, modules)
        rows = [n for n in names if _ROW.fullmatch(n.rsplit(".", 1)[-1])] if family == "xilinx" else []
        in_rows = {m for r in rows for m in _below(r, names)}
        shell = [modules[n] for n in names if n not in in_rows] + [_black_box(modules[r]) for r in rows]
        boxes = frozenset(r.replace(engine, "engine", 1) for r in rows)
        terms = [(job(_renamed(shell, engine, "engine"), "engine"), 1, boxes)]
        for r in rows:
            terms.append((job(_renamed([modules[m] for m in _below(r, names)], r, "row"), "row"), 1, frozenset()))
        parts[engine.rsplit(".", 1)[1]] = terms
    owned = {m for e in engines for m in _below(e, modules)}
    glue_text = "".join(body for name, body in modules.items() if name not in owned)
    glue_text += "".join(_black_box(modules[e]) for e in engines)
    parts[GLUE] = [(job(glue_text, top), 1, frozenset(engines))]
    return SynthesisPlan(tuple(jobs), parts)


def synthesize_part(part):
    """The job: one part out of context (cached by its text, in the worker's cache)."""
    return synthesize(part.text, part.top, part.family, cache_dir=part.cache_dir)


def _combined(terms, results, family, flow):
    """One SynthResult from ``(result, instances, black boxes)`` terms."""
    cells = {}
    for k, count, boxes in terms:
        for cell, n in results[k].cells.items():
            if cell.lstrip("\\") not in boxes:
                cells[cell] = cells.get(cell, 0) + count * n
    first = results[terms[0][0]]
    key = hashlib.sha256("".join(f"{results[k].key}x{n}" for k, n, _ in terms).encode()).hexdigest()
    return summarize(family, cells, {}, sum(results[k].seconds for k, _, _ in terms),
                     all(results[k].cached for k, _, _ in terms), first.yosys_version, key, flow)


def synthesize_engines(verilog, top, family, *, cache_dir=None, executor=None, progress=None):
    """Synthesize each engine of a build's Verilog out of context, as jobs of ``executor``
    (default: in this process) cached in ``cache_dir`` (default: the worker's cache); return
    ``(total, parts)``: a :class:`SynthResult` of the whole design and ``{part name: SynthResult}``
    (``engine0``..., :data:`GLUE`) in file order. ``seconds`` of each is its jobs' Yosys time.

    ``progress(job, done, jobs)`` is called as each job ends. A job that fails raises a
    LowbitError with Yosys's message once the other jobs have ended.
    """
    plan = split_engines(verilog, top, family, cache_dir)
    longest_first = sorted(plan.jobs, key=lambda part: -len(part.text))

    def done(part, outcome, finished, failed):
        if progress:
            progress(part, finished, len(plan.jobs))

    outcomes, failed = (executor or Executor(workers=1)).map(synthesize_part, longest_first, on_done=done)
    if failed:
        f = failed[0]
        raise LowbitError(f"synthesis of a part of {top!r} ({f.spec.top} {f.spec.digest}) failed: {f.error}",
                          "fix the design, or synthesize it flat (--flat) to compare"
                          + (f"; {len(failed) - 1} other job(s) failed too" if len(failed) > 1 else ""))
    by_digest = {part.digest: r for part, r in outcomes}
    results = [by_digest[part.digest] for part in plan.jobs]
    flow = f"{results[0].flow}, per engine"
    parts = {name: _combined(terms, results, family, flow) for name, terms in plan.parts.items()}
    total = _combined([t for terms in plan.parts.values() for t in terms], results, family, flow)
    # The modules are the parts; the time is each job's once, not once per instance.
    total = summarize(family, total.cells, {name: dict(p.cells) for name, p in parts.items()},
                      sum(r.seconds for r in results), total.cached, total.yosys_version, total.key, flow)
    return total, parts
