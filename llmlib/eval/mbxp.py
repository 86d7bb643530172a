"""MBXP scoring for mixtral-8x7b: run each generated solution against its test code.

What MLPerf's ``language/mixtral-8x7b/evaluate_mbxp.py`` (over ``mxeval``) does, and this
module does the same way:
- A sample's ``id`` is ``<lang>_<entry point>``; its ``gt_output`` is the test code.
- The response is cut at the first code fence (```` ``` ````), ``\\_`` becomes ``_``, Python
  solutions lose leading whitespace; the prompt is not prepended (the model repeats it).
- Only cpp, python, php, javascript, ruby and typescript are scored; samples in other
  languages are left out of the score (and counted in the note).
- Program: Python ``solution + "\\n" + test + "\\n" + "check(<entry point>)"``, run so that
  any exception, ``SystemExit`` included, fails it; other languages ``solution + test``,
  built where the language needs it (``g++``; ``tsc --target es5 --lib es2016``) and run
  (``node``, ``php``, ``ruby``); exit status 0 passes. 20 s per run, 100 s per build.
- The score is ``100 * passed / scored samples``.

Departures, each deliberate: a TypeScript build counts as built when ``tsc`` wrote the
``.js`` file (mxeval tests ``tsc``'s exit status for 2, which is what ``--lib es2016``
without DOM types always gives); output is discarded rather than collected.

A language whose toolchain is not on ``PATH`` cannot be scored here; ``missing`` names it and
the caller must not report a score as if it were complete.

This is not a security sandbox: each program runs in a fresh temporary directory, in its own
process group (killed whole on timeout), with a CPU-time and file-size limit and a small
environment. Run untrusted model output inside a container.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

SCORED_LANGUAGES = ("cpp", "python", "php", "javascript", "ruby", "typescript")
RUN_TIMEOUT_S = 20.0
BUILD_TIMEOUT_S = 100.0
FILE_SIZE_BLOCKS = 65536  # ulimit -f (one limit per call in dash): 32 MiB in 512-byte blocks

# Runs the program text so that any exception, SystemExit included, is a failure (as
# mxeval's in-process exec), and only a normal end passes.
_PY_RUNNER = """\
import os, sys
src = open(sys.argv[1], encoding="utf-8").read()
try:
    exec(compile(src, "solution.py", "exec"), {"__name__": "__main__"})
except BaseException:
    os._exit(1)
os._exit(0)
"""


@dataclass(frozen=True)
class Toolchain:
    ext: str
    needs: tuple[str, ...]  # executables that must be on PATH
    run: tuple[str, ...]  # {src}, {stem}, {python} filled in
    build: tuple[str, ...] = ()
    built: str = ""  # file the build must leave behind ("" = exit status 0 is enough)


TOOLCHAINS: dict[str, Toolchain] = {
    "python": Toolchain(".py", (), ("{python}", "-I", "runner.py", "{src}")),
    "cpp": Toolchain(".cpp", ("g++",), ("./{stem}",), ("g++", "{src}", "-o", "{stem}")),
    "javascript": Toolchain(".js", ("node",), ("node", "{src}")),
    "typescript": Toolchain(
        ".ts",
        ("tsc", "node"),
        ("node", "{stem}.js"),
        ("tsc", "{src}", "--target", "es5", "--lib", "es2016"),
        built="{stem}.js",
    ),
    "php": Toolchain(".php", ("php",), ("php", "{src}")),
    "ruby": Toolchain(".rb", ("ruby",), ("ruby", "{src}")),
}


@dataclass
class Problem:
    key: str  # "<lang>_<entry point>", the sample's id
    lang: str
    entry_point: str
    test: str
    response: str

    @classmethod
    def from_sample(cls, sample_id: str, test: str, response: str) -> Problem:
        if "_" not in sample_id:
            raise ValueError(f"MBXP sample id {sample_id!r} is not '<language>_<entry point>'")
        lang, entry = sample_id.split("_", 1)
        return cls(sample_id, lang, entry, test, response)

    def solution(self) -> str:
        code = self.response.split("```", 1)[0]
        if self.lang == "python":
            code = code.lstrip()
        elif self.lang == "go":
            code = _postprocess_go(code)
        elif self.lang == "scala":
            code = code.replace("object Main extends App {", "")
            code = "".join(code.splitlines(True)[:-1])
        return code.replace("\\_", "_")

    def program(self) -> str:
        if self.lang == "python":
            return f"{self.solution()}\n{self.test}\ncheck({self.entry_point})"
        return self.solution() + self.test


def _postprocess_go(code: str) -> str:
    code = code.replace("package main", "")
    code = re.sub(r"^import \(\n(.+)((?:\n.+)+)\n\)", "", code, flags=re.MULTILINE)
    code = re.sub(r"^import \".*\"", "", code)
    return re.sub(r"^func main.*^}", "", code, flags=re.MULTILINE | re.DOTALL)


@dataclass
class Outcome:
    key: str
    lang: str
    passed: bool
    detail: str  # "passed", "failed (exit 1)", "timed out", "build failed: ..."


@dataclass
class MbxpResult:
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # languages MLPerf does not score
    missing: dict[str, int] = field(default_factory=dict)  # scored languages without toolchain

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def score(self) -> float:
        """100 x passed / scored samples (NaN when a toolchain was missing or none scored)."""
        n = len(self.outcomes) + sum(self.missing.values())
        if not self.complete or n == 0:
            return float("nan")
        return 100.0 * sum(o.passed for o in self.outcomes) / n

    def by_language(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for o in self.outcomes:
            p, n = out.get(o.lang, (0, 0))
            out[o.lang] = (p + o.passed, n + 1)
        return dict(sorted(out.items()))

    def note(self) -> str:
        parts = []
        per = ", ".join(f"{lang} {p}/{n}" for lang, (p, n) in self.by_language().items())
        if per:
            parts.append(f"MBXP passed per language: {per}")
        if self.missing:
            miss = ", ".join(
                f"{lang} ({n} samples; needs {' and '.join(TOOLCHAINS[lang].needs)})"
                for lang, n in sorted(self.missing.items())
            )
            parts.append(
                f"MBXP incomplete: no toolchain on PATH for {miss}; install it and re-run "
                "`make evaluate` to score them"
            )
        if self.skipped:
            skip = ", ".join(f"{lang} {n}" for lang, n in sorted(self.skipped.items()))
            parts.append(f"MBXP samples in languages MLPerf does not score, left out: {skip}")
        return "; ".join(parts)


def missing_toolchains(
    langs: Iterable[str], which: Callable[[str], str | None] | None = None
) -> set[str]:
    """Languages among ``langs`` with an executable not found (``which``: ``shutil.which``)."""
    find = which or shutil.which
    return {lang for lang in langs if any(find(t) is None for t in TOOLCHAINS[lang].needs)}


def evaluate(
    problems: list[Problem],
    workers: int | None = None,
    timeout_s: float = RUN_TIMEOUT_S,
    which: Callable[[str], str | None] | None = None,
) -> MbxpResult:
    """Run every problem in a language MLPerf scores and whose toolchain is here."""
    res = MbxpResult()
    scored = [p for p in problems if p.lang in SCORED_LANGUAGES]
    for p in problems:
        if p.lang not in SCORED_LANGUAGES:
            res.skipped[p.lang] = res.skipped.get(p.lang, 0) + 1
    absent = missing_toolchains({p.lang for p in scored}, which)
    runnable = []
    for p in scored:
        if p.lang in absent:
            res.missing[p.lang] = res.missing.get(p.lang, 0) + 1
        else:
            runnable.append(p)
    n = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=max(1, n)) as pool:
        res.outcomes = list(pool.map(lambda p: run_problem(p, timeout_s), runnable))
    return res


def run_problem(problem: Problem, timeout_s: float = RUN_TIMEOUT_S) -> Outcome:
    """Build (where needed) and run one problem's program in a fresh temporary directory."""
    tc = TOOLCHAINS[problem.lang]
    with tempfile.TemporaryDirectory(prefix="mbxp-") as tmp:
        d = Path(tmp)
        stem = "main"
        src = stem + tc.ext
        (d / src).write_text(problem.program(), encoding="utf-8")
        if problem.lang == "python":
            (d / "runner.py").write_text(_PY_RUNNER)
        fill = {"src": src, "stem": stem, "python": sys.executable}
        if tc.build:
            rc, err = run_sandboxed([a.format(**fill) for a in tc.build], d, BUILD_TIMEOUT_S)
            built = (d / tc.built.format(**fill)).is_file() if tc.built else rc == 0
            if not built:
                return Outcome(problem.key, problem.lang, False, f"build failed: {err}")
        rc, err = run_sandboxed([a.format(**fill) for a in tc.run], d, timeout_s)
        if rc is None:
            return Outcome(problem.key, problem.lang, False, "timed out")
        return Outcome(
            problem.key, problem.lang, rc == 0, "passed" if rc == 0 else f"failed (exit {rc})"
        )


def run_sandboxed(cmd: list[str], cwd: Path, timeout_s: float) -> tuple[int | None, str]:
    """Exit status and the end of stderr; (None, "") when it ran past ``timeout_s``. Limits
    are set by the shell (``preexec_fn`` is not safe with the worker threads)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), "LANG": "C.UTF-8"}
    limits = f'ulimit -t {int(timeout_s) + 1}; ulimit -f {FILE_SIZE_BLOCKS}; exec "$@"'
    err_path = cwd / f".stderr-{cmd[0].rsplit('/', 1)[-1]}"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", limits, "sh", *cmd],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
        try:
            rc: int | None = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            rc = None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the program and anything it left running
        proc.wait()
    if rc is None:
        return None, ""
    return rc, err_path.read_bytes()[-300:].decode("utf-8", "replace").strip()
