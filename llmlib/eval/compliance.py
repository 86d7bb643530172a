"""MLPerf compliance checks on a run's LoadGen logs: TEST06, TEST07 and TEST09.

TEST06 (LLM output consistency) runs a performance test under its audit.config
(``configs/compliance/TEST06/audit.config``), which makes LoadGen log about 100 sampled
responses to ``mlperf_log_accuracy.json`` with, per sample, the final token data
(``data``), the first-token data (``token_data``, streamed scenarios) and ``token_count``.
Three checks, as MLPerf's TEST06 states them:

* first token: the final data starts with the first-token data (skipped for Offline);
* EOS: the output ends with at most one EOS token;
* length: ``token_count`` equals the number of tokens in the data.

Each check here is at least as strict as MLPerf's run_verification.py: the first-token data
must be a whole prefix (not just agree where both have tokens), and a run of two EOS tokens
fails even when it is the entire output.

TEST07 (accuracy in performance mode; gpt-oss-120b) runs a performance test under its
benchmark's audit.config (``configs/compliance/TEST07/<family>/audit.config``), which logs
every response; the benchmark's own scorer scores the log, and its ``exact_match`` must reach
the audit.config's ``test07_accuracy_threshold``. TEST09 (output length in performance
mode; gpt-oss-120b) logs every response the same way; the mean output length (tokens in
each response's data) must lie within ``test09_min_output_tokens`` ..
``test09_max_output_tokens``. Their ``verify_accuracy.txt`` / ``verify_output_len.txt`` are
written as MLPerf's ``compliance/TEST07|TEST09/run_verification.py`` write them (the
submission checker looks for ``TEST PASS`` in them).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmlib.errors import ConfigError

COMPLIANCE_TESTS = ("TEST06", "TEST07", "TEST09")
MAX_LISTED = 10  # failures listed per check


@dataclass
class Test06Result:
    samples: int
    first_token: bool | None  # None: skipped (Offline)
    eos: bool
    length: bool
    failures: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None  # why nothing could be checked

    @property
    def passed(self) -> bool:
        return (
            self.problem is None
            and self.samples > 0
            and self.first_token is not False
            and self.eos
            and self.length
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "test": "TEST06",
            "result": "PASS" if self.passed else "FAIL",
            "samples": self.samples,
            "checks": {
                "first_token": "skipped" if self.first_token is None else self.first_token,
                "eos": self.eos,
                "length": self.length,
            },
            "failures": self.failures,
            "problem": self.problem,
        }

    def verify_text(self) -> str:
        """The verification summary in the form of MLPerf's run_verification.py."""
        ft = "Skipped" if self.first_token is None else str(self.first_token)
        lines = [
            f"First token check pass: {ft}",
            f"EOS check pass: {self.eos}",
            f"Sample length check pass: {self.length}",
            "TEST06 verification complete" if self.passed else "TEST06 verification failed",
        ]
        if self.problem:
            lines.append(f"Problem: {self.problem}")
        return "\n".join(lines) + "\n"


def _tokens(hexdata: str, dtype: np.dtype) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(hexdata), dtype=dtype)


def trailing_eos(tokens: np.ndarray, eos_id: int) -> int:
    """How many EOS tokens the output ends with."""
    n = 0
    for t in tokens[::-1]:
        if t != eos_id:
            break
        n += 1
    return n


def check_test06(
    accuracy_log: str | Path, scenario: str, eos_id: int = 2, dtype: Any = np.uint32
) -> Test06Result:
    """Run TEST06's three checks on ``mlperf_log_accuracy.json``. ``scenario`` is llmlib's
    (offline, server, singlestream); ``dtype`` the token type the run sent to LoadGen."""
    path = Path(accuracy_log)
    dt = np.dtype(dtype)
    need_first = scenario.lower() != "offline"
    bad = Test06Result(0, None if not need_first else False, False, False)
    if not path.is_file():
        bad.problem = f"{path}: not found (did the compliance run finish?)"
        return bad
    try:
        entries = json.loads(path.read_text() or "[]")
    except json.JSONDecodeError as exc:
        bad.problem = f"{path}: not valid JSON ({exc})"
        return bad
    if not isinstance(entries, list) or not entries:
        bad.problem = f"{path}: no logged samples (was the TEST06 audit.config applied?)"
        return bad
    res = Test06Result(len(entries), True if need_first else None, True, True)
    counts = {"first_token": 0, "eos": 0, "length": 0}

    def fail(check: str, entry: dict[str, Any], why: str) -> None:
        counts[check] += 1
        if counts[check] <= MAX_LISTED:
            res.failures.append(
                {
                    "check": check,
                    "seq_id": entry.get("seq_id"),
                    "qsl_idx": entry.get("qsl_idx"),
                    "why": why,
                }
            )

    for e in entries:
        try:
            data = _tokens(e["data"], dt)
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(f"{path}: malformed entry {e!r:.120}: {exc}") from None
        if need_first:
            if "token_data" not in e:
                res.first_token = False
                fail("first_token", e, "no token_data (first token not reported)")
            else:
                first = _tokens(e["token_data"], dt)
                if len(first) > len(data) or not np.array_equal(data[: len(first)], first):
                    res.first_token = False
                    fail(
                        "first_token",
                        e,
                        f"final data starts {data[:4].tolist()}, first token {first.tolist()}",
                    )
        if trailing_eos(data, eos_id) > 1:
            res.eos = False
            fail("eos", e, f"ends with {trailing_eos(data, eos_id)} EOS tokens")
        count = e.get("token_count")
        if count != len(data):
            res.length = False
            fail("length", e, f"token_count {count} but {len(data)} tokens of data")
    return res


AUDIT_THRESHOLDS = ("test07_accuracy_threshold", "test09_min_output_tokens",
                    "test09_max_output_tokens")  # fmt: skip


def audit_thresholds(path: str | Path) -> dict[str, float]:
    """The thresholds a TEST07/TEST09 audit.config carries for the verification (LoadGen
    does not read them): ``*.*.<name> = <value>``, an inline ``#`` comment allowed."""
    out: dict[str, float] = {}
    p = Path(path)
    for n, line in enumerate(p.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if "=" not in line:
            continue
        key, value = (x.strip() for x in line.split("=", 1))
        name = key.rsplit(".", 1)[-1]
        if name in AUDIT_THRESHOLDS:
            try:
                v = float(value)
            except ValueError:
                v = math.nan
            if not math.isfinite(v):
                raise ConfigError(f"{p}:{n}: {name} must be a finite number, got {value!r}")
            out[name] = v
    return out


def _load_entries(path: Path) -> tuple[list[dict[str, Any]] | None, str | None]:
    if not path.is_file():
        return None, f"{path}: not found (did the compliance run finish?)"
    try:
        entries = json.loads(path.read_text() or "[]")
    except json.JSONDecodeError as exc:
        return None, f"{path}: not valid JSON ({exc})"
    if not isinstance(entries, list) or not entries:
        return None, f"{path}: no logged samples (was the audit.config applied?)"
    return entries, None


RULE = "=" * 80


@dataclass
class Test07Result:
    score: float | None  # exact_match, None when it could not be scored
    threshold: float
    samples: int = 0
    scorer_output: str = ""  # the scorer's table, as the verification prints it
    problem: str | None = None

    @property
    def passed(self) -> bool:
        return self.problem is None and self.score is not None and self.score >= self.threshold

    def to_json(self) -> dict[str, Any]:
        return {
            "test": "TEST07",
            "result": "PASS" if self.passed else "FAIL",
            "samples": self.samples,
            "exact_match": self.score,
            "threshold": self.threshold,
            "problem": self.problem,
        }

    def verify_text(self) -> str:
        """verify_accuracy.txt as MLPerf's TEST07 run_verification.py writes it: the
        scorer's output, then its summary."""
        lines = [self.scorer_output.rstrip()] if self.scorer_output else []
        if self.score is not None:
            lines.append(f"'exact_match': {self.score:.3f}")
        lines += ["", RULE, "TEST07 Verification Summary", RULE]
        if self.score is not None:
            lines += [
                f"Accuracy score: {self.score}",
                f"Accuracy threshold: {self.threshold}",
                f"Accuracy check pass: {self.passed}",
            ]
        else:
            lines.append(f"Error: Could not parse accuracy score ({self.problem})")
        lines.append("TEST PASS" if self.passed else "TEST FAIL")
        return "\n".join(lines) + "\n"


def check_test07(
    accuracy_log: str | Path,
    threshold: float,
    scorer: Callable[[Path], tuple[float | None, int, str]],
) -> Test07Result:
    """TEST07 on a compliance run's log: ``scorer(log)`` gives (exact_match or None,
    samples scored, its printed table); the score must reach ``threshold``."""
    path = Path(accuracy_log)
    _, problem = _load_entries(path)
    if problem:
        return Test07Result(None, threshold, problem=problem)
    value, n, table = scorer(path)
    res = Test07Result(value, threshold, n, table)
    if value is None:
        res.problem = "the scorer gave no exact_match (see its output above)"
    return res


@dataclass
class Test09Result:
    samples: int
    mean: float
    low: float
    high: float
    shortest: int = 0
    longest: int = 0
    std: float = 0.0
    problem: str | None = None

    @property
    def passed(self) -> bool:
        return self.problem is None and self.samples > 0 and self.low <= self.mean <= self.high

    def to_json(self) -> dict[str, Any]:
        return {
            "test": "TEST09",
            "result": "PASS" if self.passed else "FAIL",
            "samples": self.samples,
            "mean_output_tokens": self.mean,
            "min_output_tokens": self.low,
            "max_output_tokens": self.high,
            "problem": self.problem,
        }

    def verify_text(self) -> str:
        """verify_output_len.txt as MLPerf's TEST09 run_verification.py writes it."""
        lo_ok, hi_ok = self.mean >= self.low, self.mean <= self.high
        lines = [RULE, "TEST09: Verify Output Token Length in Performance Mode", RULE, ""]
        if self.problem:
            lines += [f"Error: {self.problem}", "", "TEST FAIL"]
            return "\n".join(lines) + "\n"
        lines += [
            "Output Token Length Statistics",
            "-" * 40,
            f"Total samples: {self.samples}",
            f"Mean output tokens: {self.mean:.2f}",
            f"Min output tokens: {self.shortest}",
            f"Max output tokens: {self.longest}",
            f"Std deviation: {self.std:.2f}",
            "",
            RULE,
            "Verification Results",
            RULE,
            f"Mean output tokens: {self.mean:.2f}",
            f"Min threshold: {self.low}",
            f"Max threshold: {self.high}",
            f"Min check pass: {lo_ok}",
            f"Max check pass: {hi_ok}",
            "",
            "TEST PASS" if self.passed else "TEST FAIL",
        ]
        return "\n".join(lines) + "\n"


def check_test09(
    accuracy_log: str | Path, low: float, high: float, dtype: Any = np.uint32
) -> Test09Result:
    """TEST09 on a compliance run's log: the mean number of tokens in each logged
    response (every entry, as the reference counts them) within [low, high]."""
    path = Path(accuracy_log)
    entries, problem = _load_entries(path)
    if entries is None:
        return Test09Result(0, 0.0, low, high, problem=problem)
    size = np.dtype(dtype).itemsize
    lens = []
    for e in entries:
        try:
            lens.append(len(bytes.fromhex(e.get("data", ""))) // size)
        except (AttributeError, ValueError, TypeError) as exc:
            raise ConfigError(f"{path}: malformed entry {e!r:.120}: {exc}") from None
    arr = np.asarray(lens, dtype=np.float64)
    return Test09Result(
        len(lens), float(arr.mean()), low, high, int(arr.min()), int(arr.max()), float(arr.std())
    )
