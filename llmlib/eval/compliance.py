"""MLPerf compliance checks on a run's LoadGen logs.

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
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmlib.errors import ConfigError

COMPLIANCE_TESTS = ("TEST06",)
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
