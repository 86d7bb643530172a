"""What MLPerf's rules demand of an LLM performance run, checked on its LoadGen detail log.

The reference values are LoadGen's own: the embedded mlperf.conf, read in a fresh process
(LoadGen applies mlperf.conf only on the first ``FromConfig`` of a process, so asking in the
test's own process would be wrong). A run is held to:

* token latencies on (``use_token_latencies``);
* the minimum duration and query count, and the performance sample count, of mlperf.conf
  (not lowered);
* TTFT/TPOT limits not loosened (Server), and LoadGen's own verdict: latency constraints,
  minimum duration and queries met, result VALID.

A SubmissionRun treats these as errors; other runs get them as warnings (a local run with a
short duration is normal, it just is not a submission).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from typing import Any

from llmlib.errors import MissingDependencyError

# The oldest LoadGen that knows this round's benchmarks and settings (llama3_1-8b, TTFT/TPOT,
# accuracy_sample_count_override): the v6.0 round's
LOADGEN_MIN = (6, 0)
LOADGEN_FIX = "pip install 'mlcommons-loadgen>=6.0' (or the carried cp312 wheel of 6.0.x)"

_PROBE = """
import json, sys, tempfile, mlperf_loadgen as lg
with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
    ts = lg.TestSettings()
    ts.FromConfig(f.name, sys.argv[1], sys.argv[2], 1)
print(json.dumps({k: getattr(ts, k) for k in (
    "min_duration_ms", "min_query_count", "performance_sample_count_override",
    "accuracy_sample_count_override", "use_token_latencies", "ttft_latency", "tpot_latency",
    "server_target_latency_percentile")}))
"""


EARLY_STOPPING_CONFIDENCE = 0.99  # LoadGen's, for its estimate of a latency percentile


def fewest_passing_queries(percentile: float) -> int:
    """The fewest queries with which LoadGen's early stopping passes a run at this latency
    percentile, none of them over the limit (459 at p99): a shorter run cannot be VALID."""
    return math.ceil(math.log(1 - EARLY_STOPPING_CONFIDENCE) / math.log(percentile))


def check_loadgen() -> str:
    """The installed LoadGen's version; MissingDependencyError where it is absent or older
    than LOADGEN_MIN (an older one fails mid-test on settings it lacks)."""
    try:
        version = metadata.version("mlcommons-loadgen")
    except metadata.PackageNotFoundError:
        raise MissingDependencyError(
            f"MLCommons LoadGen is not installed for {sys.executable}: {LOADGEN_FIX}"
        ) from None
    m = re.match(r"(\d+)\.(\d+)", version)  # major.minor; anything else is not new enough
    if not m or (int(m[1]), int(m[2])) < LOADGEN_MIN:
        raise MissingDependencyError(
            f"mlcommons-loadgen {version} is installed; llmlib needs >= "
            f"{'.'.join(map(str, LOADGEN_MIN))} (the v6.0 round's benchmarks and settings): "
            f"{LOADGEN_FIX}"
        )
    return version


@lru_cache(maxsize=16)
def official_settings(model: str, scenario: str) -> dict[str, Any]:
    """mlperf.conf's settings for (LoadGen model name, scenario), e.g. ("llama2-70b",
    "Server"). A LoadGen that cannot say is MissingDependencyError, one line."""
    try:
        out = subprocess.run(
            [sys.executable, "-c", _PROBE, model, scenario],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return dict(json.loads(out.stdout))
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, ValueError) as exc:
        lines = (getattr(exc, "stderr", None) or str(exc)).strip().splitlines() or ["no output"]
        raise MissingDependencyError(
            f"LoadGen could not give mlperf.conf's settings for {model} {scenario}: "
            f"{lines[-1]}; {LOADGEN_FIX}"
        ) from None


def check_llm_run(detail: dict[str, Any], official: dict[str, Any], scenario: str) -> list[str]:
    """Problems with a performance run (empty: it meets the rules checked here)."""
    problems: list[str] = []

    def get(key: str) -> Any:
        return detail.get(key)

    if get("requested_use_token_latencies") is not True:
        problems.append("token latencies are off (use_token_latencies must be true for LLMs)")
    dur, want_dur = get("effective_min_duration_ms"), official["min_duration_ms"]
    if dur is not None and dur < want_dur:
        problems.append(f"min_duration {dur} ms is below mlperf.conf's {want_dur} ms")
    q, want_q = get("effective_min_query_count"), official["min_query_count"]
    if q is not None and q < want_q:
        problems.append(f"min_query_count {q} is below mlperf.conf's {want_q}")
    psc, want_psc = (
        get("effective_performance_sample_count"),
        official["performance_sample_count_override"],
    )
    if want_psc and psc != want_psc:
        problems.append(
            f"performance sample count {psc} is not the benchmark's {want_psc} "
            "(the whole dataset must be loadable)"
        )
    if scenario.lower() == "server":
        for name, key in (("TTFT", "ttft_latency"), ("TPOT", "tpot_latency")):
            got = get(f"requested_server_{key}")
            if got is not None and got > official[key]:
                problems.append(
                    f"{name} limit {got / 1e6:g} ms is looser than mlperf.conf's "
                    f"{official[key] / 1e6:g} ms"
                )
    if get("result_perf_constraints_met") is False:
        problems.append("LoadGen: latency constraints not met (p99 TTFT/TPOT over the limits)")
    if get("result_min_duration_met") is False:
        problems.append("LoadGen: minimum duration not met")
    if get("result_min_queries_met") is False:
        problems.append("LoadGen: minimum query count not met")
    if get("result_validity") not in (None, "VALID"):
        problems.append(f"LoadGen result {get('result_validity')}")
    return problems


# LoadGen builds every query of a performance run before the test starts, about 450 bytes
# each (a null SUT, Offline: 1.1M queries, 507 MB peak; 2.2M, 1013 MB), and the harness keeps
# ~200 bytes per request on top. 20M queries is ~13 GB: past that a typo ("1e9") would
# exhaust the machine before the first query is issued.
MAX_SCHEDULED_QUERIES = 20_000_000


def check_schedule(
    rate: tuple[str, float, float], min_duration_ms: float, min_queries: int
) -> None:
    """Refuse a schedule LoadGen could not hold. ``rate`` is (flag, its value, queries/s it
    means: Offline's expected rate + 10%, SingleStream's 1000 / latency), over
    ``min_duration_ms``, and at least ``min_queries`` (LoadGen builds those even when a
    max_query_count is lower: seen as std::bad_alloc)."""
    from llmlib.errors import ConfigError

    flag, value, qps = rate
    by_rate = qps * min_duration_ms / 1000.0
    n = max(by_rate, float(min_queries))
    if n <= MAX_SCHEDULED_QUERIES:
        return
    cause = (
        f"--{flag}={value:g} over a {min_duration_ms / 1000:g} s minimum duration"
        if by_rate >= min_queries
        else f"--min_query_count={min_queries}"
    )
    raise ConfigError(
        f"{cause} schedules {n:.3g} queries, which LoadGen builds in memory before the test "
        f"starts (~450 bytes each); the most it may schedule is {MAX_SCHEDULED_QUERIES:.0e}: "
        "lower the rate, --min_duration or --min_query_count"
    )
