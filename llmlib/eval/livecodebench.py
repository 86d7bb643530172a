"""LiveCodeBench scoring for deepseek-r1 and gpt-oss-120b: the generated code run against the
problem's tests, with the rules of LiveCodeBench's ``lcb_runner`` (which MLPerf's scorers
call) and in the sandboxed runner MBXP uses (``llmlib.eval.mbxp.run_sandboxed``: a fresh
temporary directory, its own process group, CPU-time and file-size limits).

Tests come from LiveCodeBench's ``code_generation_lite`` release files as published (JSONL,
one problem per line: ``question_id``, ``public_test_cases`` (a JSON list of ``input``,
``output``, ``testtype``), ``private_test_cases`` (JSON, or base64 of zlib of a pickled JSON
string), ``metadata`` (JSON; ``func_name`` for LeetCode-style problems)); the user points to
a file or a directory of them (``--lcb_tests_path``). A dataset row's ground truth is the
``question_id``.

A problem passes when every test passes, public then private, each within
``TEST_TIMEOUT_S``:
* standard input (no ``func_name``): the program runs with the test's input on stdin; the
  output and the expected output are compared line by line, each line stripped (and the
  whole stripped first); lines that differ as text still match when both are whitespace-
  separated numbers equal as decimals;
* functional: ``Solution().<func_name>(*args)``, each argument one JSON line of the input,
  equal to the JSON output (a tuple counts as a list).
The program text is prefixed with the imports lcb_runner adds (``string``, ``re``,
``math``, ``collections``, ``itertools``, ``heapq``, ``bisect``, ``functools``, ``typing``
and the like) and a raised recursion limit.
"""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import sys
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmlib.errors import ConfigError
from llmlib.eval.mbxp import run_sandboxed

TEST_TIMEOUT_S = 6.0  # per test, as lcb_runner's default
PROBLEM_TIMEOUT_S = 120.0

PRELUDE = """\
from string import *
from re import *
from datetime import *
from collections import *
from heapq import *
from bisect import *
from copy import *
from math import *
from random import *
from statistics import *
from itertools import *
from functools import *
from operator import *
from io import *
from sys import *
from json import *
from builtins import *
from typing import *
import string, re, datetime, collections, heapq, bisect, copy, math, random
import statistics, itertools, functools, operator, io, sys, json
sys.setrecursionlimit(50000)
"""

_RUNNER = """\
import decimal, io, json, os, signal, sys
src = open(sys.argv[1], encoding="utf-8").read()
tests = json.load(open(sys.argv[2], encoding="utf-8"))
per_test = float(sys.argv[3])
code = compile(src, "solution.py", "exec")

def _alarm(*_):
    raise TimeoutError

def _lines(s):
    return [line.strip() for line in s.strip().split("\\n")]

def _decimals(line):
    try:
        return [decimal.Decimal(x) for x in line.split()]
    except (decimal.InvalidOperation, ValueError):
        return None

def same_stdio(got, want):
    a, b = _lines(got), _lines(want)
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x == y:
            continue
        dx, dy = _decimals(x), _decimals(y)
        if dx is None or dy is None or dx != dy:
            return False
    return True

def listify(v):
    if isinstance(v, tuple):
        return [listify(x) for x in v]
    if isinstance(v, list):
        return [listify(x) for x in v]
    return v

signal.signal(signal.SIGALRM, _alarm)
fn = tests.get("fn_name")
out = sys.stdout
for inp, want in zip(tests["inputs"], tests["outputs"]):
    ok = False
    signal.setitimer(signal.ITIMER_REAL, per_test)
    try:
        if not fn:
            sys.stdin = io.TextIOWrapper(io.BytesIO(inp.encode("utf-8")), encoding="utf-8")
            buf = io.StringIO()
            sys.stdout = buf
            try:
                exec(code, {"__name__": "__main__"})
            except SystemExit:
                pass
            finally:
                sys.stdout = out
            ok = same_stdio(buf.getvalue(), want)
        else:
            ns = {"__name__": "solution"}
            exec(code, ns)
            target = getattr(ns["Solution"](), fn) if "Solution" in ns else ns[fn]
            args = [json.loads(line) for line in inp.split("\\n") if line.strip()]
            ok = listify(target(*args)) == listify(json.loads(want))
    except BaseException:
        ok = False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        sys.stdout = out
    if not ok:
        os._exit(1)
os._exit(0)
"""


@dataclass(frozen=True)
class LcbProblem:
    question_id: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    fn_name: str | None


class _StrOnly(pickle.Unpickler):
    """Private test cases are a pickled JSON string: nothing else may be unpickled."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _private_tests(raw: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(raw, list):
        return raw
    text = str(raw or "[]")
    try:
        return list(json.loads(text))
    except json.JSONDecodeError:
        pass
    try:
        blob = zlib.decompress(base64.b64decode(text.encode("utf-8")))
        inner = _StrOnly(io.BytesIO(blob)).load()
        return list(json.loads(inner))
    except Exception as exc:  # noqa: BLE001 - several codecs can fail; one message
        raise ConfigError(f"{where}: private_test_cases not readable ({exc})") from None


def problem_from_row(row: dict[str, Any], where: str) -> LcbProblem:
    try:
        qid = str(row["question_id"])
        public = row.get("public_test_cases", "[]")
        public = json.loads(public) if isinstance(public, str) else list(public)
        tests = public + _private_tests(row.get("private_test_cases"), where)
        meta = row.get("metadata") or "{}"
        meta = json.loads(meta) if isinstance(meta, str) else dict(meta)
        return LcbProblem(
            qid,
            tuple(str(t["input"]) for t in tests),
            tuple(str(t["output"]) for t in tests),
            meta.get("func_name") or None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: not a LiveCodeBench problem ({exc})") from None


def load_tests(path: str | Path) -> dict[str, LcbProblem]:
    """question_id -> problem, from a code_generation_lite JSONL file or a directory of them."""
    p = Path(path)
    files = sorted(p.glob("*.jsonl")) if p.is_dir() else [p]
    if not files or not all(f.is_file() for f in files):
        raise ConfigError(f"--lcb_tests_path: no LiveCodeBench JSONL at {p}")
    out: dict[str, LcbProblem] = {}
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{f}:{n}: not JSON ({exc})") from None
                prob = problem_from_row(row, f"{f}:{n}")
                out[prob.question_id] = prob
    if not out:
        raise ConfigError(f"--lcb_tests_path: {p} has no problems")
    return out


def run_problem(code: str, problem: LcbProblem, timeout_s: float = TEST_TIMEOUT_S) -> bool:
    """Whether ``code`` passes every test of ``problem``."""
    if not problem.inputs:
        return False
    with tempfile.TemporaryDirectory(prefix="lcb-") as tmp:
        d = Path(tmp)
        (d / "solution.py").write_text(PRELUDE + code, encoding="utf-8")
        tests = {"inputs": problem.inputs, "outputs": problem.outputs, "fn_name": problem.fn_name}
        (d / "tests.json").write_text(json.dumps(tests), encoding="utf-8")
        (d / "runner.py").write_text(_RUNNER, encoding="utf-8")
        budget = min(PROBLEM_TIMEOUT_S, timeout_s * len(problem.inputs) + 5)
        cmd = [sys.executable, "-I", "runner.py", "solution.py", "tests.json", str(timeout_s)]
        rc, _ = run_sandboxed(cmd, d, budget)
    return rc == 0


def evaluate(
    items: list[tuple[str | None, str]],
    tests: dict[str, LcbProblem],
    workers: int | None = None,
) -> list[bool]:
    """Pass/fail per (extracted code or None, question_id); a question without tests fails."""

    def one(item: tuple[str | None, str]) -> bool:
        code, qid = item
        prob = tests.get(qid)
        return bool(code) and prob is not None and run_problem(str(code), prob)

    n = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=max(1, n)) as pool:
        return list(pool.map(one, items))
