"""``python -m harness search [harness flags] [search flags]``: the highest Server QPS that
holds, found with few short probes and confirmed at full length.

A QPS *holds* when its Server run is VALID (LoadGen's verdict and the harness's: latency
limits, early stopping), no request failed, and the completed rate is within
``--delivery_tolerance`` of the schedule (LoadGen can call a run VALID while it falls
behind; ``harness.report.delivery``). The search:

1. bounds the peak from above: a short Offline run's completed rate (a Server run cannot
   complete more than the system does with every query at once), or ``--search_max``;
2. bisects between 0 and that bound with short Server probes (``--search_probe_ms`` long,
   as many samples as queries: LoadGen runs whole permutations of the sample set for the
   LLM benchmarks), the first at ``--search_start`` (default 90% of the bound), until the
   held and the broken QPS are ``--search_resolution`` apart. Each next probe is aimed
   where the runs' margin to their limits crosses zero between the highest that held and
   the lowest that broke (``search_aim``), else at the midpoint (and always after an aimed
   probe that did not halve the bracket). A probe stops once settled INVALID
   (``--search_stop_early``); one that held while too short for its requests' lifetimes
   runs again longer, as every later probe does (``--search_lengthen``);
3. confirms the highest held QPS with a run of the configured length (``--min_duration``,
   ``--min_query_count``); if that breaks, steps down (1% or one resolution step, whichever
   is more) and confirms again (twice).

Every probe keeps its run directory under ``<log_dir>/search-<time>/``, beside
``search.json`` (every probe), ``search.md`` (the table), ``search.png`` (QPS against p99
TTFT, p99 TPOT and the completed share, the chosen point marked) and ``user.conf``
(``<model>.Server.target_qps``, to submit with). Exit status 0 with a confirmed QPS, 1
without one, 2 for bad input (before any run).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.cli import parse_flags, plan
from harness.report.report import EARLY_STOPPING
from harness.run.driver import DRIVER, launched_server, results_root, run_child, served_by
from harness.run.interrupt import Interrupted, exit_status
from harness.run.prepare import check_datasets
from harness.run.search_aim import aim, down, margin, steady_rate
from harness.run.search_stop import stops_early
from llmlib.config.settings import Config, resolve
from llmlib.data.benchmarks import load_benchmark
from llmlib.errors import ConfigError
from llmlib.eval.rules import fewest_passing_queries, official_settings

# the search's own flags: name -> (default, help)
SEARCH_FLAGS: dict[str, tuple[str, str]] = {
    "search_max": ("", "upper bound on the peak in QPS (default: a short Offline run's rate)"),
    "search_start": ("", "the first probe's QPS (default: 90% of the upper bound)"),
    "search_resolution": ("0.1", "stop when held and broken QPS are this close"),
    "search_probe_ms": ("10000", "each probe's length in ms (min_duration of a probe)"),
    "search_probe_queries": (
        "600",
        "each probe's fewest queries (LoadGen's early stopping needs some hundreds to judge a p99)",
    ),
    "search_confirm": ("true", "confirm the found QPS with a run of the configured length"),
    "search_lengthen": (
        "true",
        "a probe that held while issuing for less than four of its requests' p90 lifetimes "
        "(too short for a backlog to show) runs again, and every later probe with it, eight "
        "lifetimes long; false: a note only",
    ),
    "search_stop_early": (
        "auto",
        "stop a Server run once it is settled INVALID (--stop_when_invalid): true, false, or "
        "auto: true where the engine lives in the run's process (dummy, transformers, "
        "tiny_llama, vllm) and against llama.cpp's server (it aborts a request whose "
        "connection closed; its /v1/models says what it is), false against others (a backlog "
        "not aborted would carry into the next probe)",
    ),
    "search_algorithm": (
        "llmlib",
        "llmlib (bound, probes, confirmation) or loadgen: LoadGen's "
        "own FindPeakPerformance from the start (or the configured QPS), "
        "each of its probes as long as ours, for comparison",
    ),
}


@dataclass
class Probe:
    """One run of the search and what it showed."""

    kind: str  # bound (Offline), probe or confirm (Server)
    qps: float  # the target (Server) or the completed rate (Offline)
    holds: bool
    validity: str
    failed: int
    completed_qps: float
    delivered: float  # completed / scheduled (Server)
    ttft_p99_ms: float
    tpot_p99_ms: float
    wall_s: float
    run_dir: str
    why: str  # what broke, or ""
    runs: int = 1  # LoadGen runs inside it (FindPeakPerformance makes many in one test)
    latency_p90_s: float = 0.0  # a request's life (Server), beside the issue window's length
    window_s: float = 0.0
    stopped_s: float = 0.0  # stopped early, this long into the test (0: ran its length)
    margin: float | None = None  # how far from breaking (search_aim.margin)
    issued: int = 0
    more_queries: int = 0  # LoadGen's early stopping asked for this many more (0: none)


def number(name: str, raw: str, low: float = 0.0) -> float:
    try:
        v = float(raw)
    except ValueError:
        raise ConfigError(f"--{name}={raw}: not a number") from None
    if not math.isfinite(v) or v <= low:
        raise ConfigError(f"--{name}={raw}: must be a finite number above {low:g}")
    return v


def split_flags(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """The harness's flags, and the search's own (checked; defaults filled in)."""
    rest, own = [], {k: d for k, (d, _) in SEARCH_FLAGS.items()}
    for a in argv:
        key, eq, val = a.removeprefix("--").partition("=")
        if a.startswith("--search_"):
            if key not in SEARCH_FLAGS:
                known = ", ".join(f"--{k}" for k in SEARCH_FLAGS)
                raise ConfigError(f"unknown search flag --{key} (known: {known})")
            if not eq:
                raise ConfigError(f"--{key} needs a value: --{key}=VALUE")
            own[key] = val
        else:
            rest.append(a)
    for k in ("search_max", "search_start"):
        if own[k]:
            number(k, own[k])
    number("search_resolution", own["search_resolution"])
    if number("search_probe_ms", own["search_probe_ms"]) < 500:
        raise ConfigError("--search_probe_ms must be at least 500 (a probe needs queries)")
    if number("search_probe_queries", own["search_probe_queries"]) != int(
        float(own["search_probe_queries"])
    ):
        raise ConfigError("--search_probe_queries must be a whole number")
    if own["search_algorithm"] not in ("llmlib", "loadgen"):
        raise ConfigError(f"--search_algorithm={own['search_algorithm']}: llmlib or loadgen")
    if own["search_confirm"] not in ("true", "false"):
        raise ConfigError(f"--search_confirm={own['search_confirm']}: true or false")
    if own["search_lengthen"] not in ("true", "false"):
        raise ConfigError(f"--search_lengthen={own['search_lengthen']}: true or false")
    if own["search_stop_early"] not in ("auto", "true", "false"):
        raise ConfigError(f"--search_stop_early={own['search_stop_early']}: auto, true or false")
    start, top = own["search_start"], own["search_max"]
    if start and top and float(start) >= float(top):
        raise ConfigError("--search_start must be below --search_max")
    return rest, own


def search_plan(argv: list[str]) -> tuple[Config, dict[str, str], dict[str, str]]:
    """The Server config the search runs (one benchmark), the flags it came from, and the
    search's own flags. Every bad input raises here, before any run."""
    rest, own = split_flags(argv)
    flags, actions = parse_flags(rest)
    if actions:
        raise ConfigError(f"search takes no {', '.join(sorted(actions))}")
    scen = flags.get("scenarios", "server")
    if scen not in ("server", "Server"):
        raise ConfigError(f"search finds a Server QPS: --scenarios={scen} is not server (one "
                          "Offline or SingleStream run measures its own figure: nothing to "
                          "search)")  # fmt: skip
    flags["scenarios"] = "server"
    configs = plan(flags)
    if len(configs) != 1:
        raise ConfigError("search takes one benchmark at a time: --benchmarks=NAME")
    if configs[0].test_mode != "PerformanceOnly":
        raise ConfigError("search runs performance tests: drop --test_mode")
    res = float(own["search_resolution"])
    if own["search_max"] and float(own["search_max"]) <= res:
        raise ConfigError("--search_max must be above --search_resolution")
    check_datasets(configs)
    spec = load_benchmark(configs[0].config_dir, configs[0].benchmark)
    pct = float(official_settings(spec.mlperf_model, "Server").get(
        "server_target_latency_percentile") or 0.99)  # fmt: skip
    fewest = fewest_passing_queries(pct)
    if own["search_algorithm"] == "llmlib" and int(float(own["search_probe_queries"])) < fewest:
        print(f"note: --search_probe_queries={own['search_probe_queries']} is below {fewest}, "
              f"the fewest with which LoadGen's early stopping passes a p{pct * 100:g}: a probe "
              "that meets the limits runs again with the queries LoadGen asks for")  # fmt: skip
    return configs[0], flags, own


def run_probe(flags: dict[str, str], cfg: Config, kind: str, qps: float, run_dir: Path,
              probe_ms: float | None, min_queries: int = 600, stop: bool = False
              ) -> Probe:  # fmt: skip
    """One run; ``probe_ms`` None: the configured length (the confirmation). ``stop``: a
    Server run ends once settled INVALID."""
    explicit: dict[str, Any] = {"warmup_queries": 0} if kind != "confirm" else {}
    if kind != "confirm":  # (the search draws its own plot of the probes)
        explicit["plots"] = False
    if stop and kind != "bound":
        explicit["stop_when_invalid"] = True
    scenario = "offline" if kind == "bound" else "server"
    if probe_ms is not None:
        # as many samples as queries (LoadGen runs whole permutations of the performance
        # sample set: mlperf.conf's 24,576 for llama2-70b would make every probe that long)
        n = max(min_queries, math.ceil(qps * probe_ms / 1000))
        explicit.update(min_duration=int(probe_ms), min_query_count=n, performance_sample_count=n)
    if kind != "bound":
        explicit["server_target_qps"] = qps
    elif probe_ms is not None:  # n queries, not the benchmark's expected QPS x the length
        explicit["offline_expected_qps"] = explicit["min_query_count"] / (probe_ms / 1000) / 2
    one = resolve(flags, benchmark=cfg.benchmark, scenario=scenario, explicit=explicit)
    t0 = time.monotonic()
    s = run_child(one, "PerformanceOnly", run_dir)
    wall = time.monotonic() - t0
    if s is None:
        return Probe(kind, qps, False, "ERROR", -1, 0.0, 0.0, 0.0, 0.0, wall, str(run_dir),
                     f"the run did not finish (see {run_dir / 'harness.log'})")  # fmt: skip
    lg, h = s.get("loadgen") or {}, s.get("harness") or {}
    d = s.get("delivery") or {}
    done = float(lg.get("samples_per_second") or 0.0)
    p99 = lambda src, k: float(((src.get(k) or {}).get("p99") or 0) / 1e6)  # noqa: E731
    why = []
    if s["validity"] != "VALID":
        why.append("; ".join(s.get("reasons") or [s["validity"]]))
    if int(h.get("failed") or 0):
        why.append(f"{h['failed']} requests failed")
    if d.get("under_delivered"):
        why.append(f"under-delivered ({d['ratio']:.1%} of the schedule)")
    sched = float(lg.get("scheduled_samples_per_second") or 0.0)
    if s.get("stopped_early"):  # no LoadGen figures: the request log's, to the stop
        return stopped_probe(kind, qps, s, wall, run_dir)
    return Probe(
        kind, done if kind == "bound" else qps, not why, s["validity"],
        int(h.get("failed") or 0), done, float(d.get("ratio") or 0.0),
        p99(lg, "ttft_ns"), p99(lg, "tpot_ns") or p99(h, "tpot_ns"), wall, str(run_dir),
        " / ".join(why), 1, float((lg.get("latency_ns") or {}).get("p90") or 0) / 1e9,
        int(h.get("issued") or 0) / sched if sched else 0.0,
        margin=None if kind == "bound" else margin(float(d.get("ratio") or 0.0),
                                                   cfg.delivery_tolerance, lg),
        issued=int(h.get("issued") or 0),
        more_queries=int(lg.get("early_stopping_more_queries") or 0),
    )  # fmt: skip


def stopped_probe(kind: str, qps: float, s: dict[str, Any], wall: float, run_dir: Path
                  ) -> Probe:  # fmt: skip
    """A run stopped once settled INVALID: the completed rate and p99s of what finished
    before the stop (from requests.csv), beside why it stopped."""
    import csv

    import numpy as np

    f, h = s["stopped_early"], s.get("harness") or {}
    with (run_dir / "requests.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["latency_ms"] and not r["error"]]
    ttft = [float(r["ttft_ms"]) for r in rows if r.get("ttft_ms")]
    tpot = [float(r["tpot_ms"]) for r in rows if r.get("tpot_ms")]
    p99 = lambda v: float(np.percentile(v, 99)) if v else 0.0  # noqa: E731
    after = float(f["after_s"])
    done = len(rows) / after if after > 0 else 0.0
    return Probe(kind, qps, False, "INVALID", int(h.get("failed") or 0), done,
                 done / qps if qps else 0.0, p99(ttft), p99(tpot), wall, str(run_dir),
                 "; ".join(s.get("reasons") or []), stopped_s=after)  # fmt: skip


def too_short(p: Probe) -> bool:
    """A probe that held while issuing for less than four of its requests' p90 lifetimes: a
    growing backlog barely shows in it (one that broke has long latencies of its own)."""
    return p.kind == "probe" and p.holds and p.latency_p90_s > p.window_s / 4


def undecided(p: Probe) -> bool:
    """A probe that broke only because LoadGen's early stopping wanted more queries (its
    latencies met the limits, nothing failed, it delivered): too short to judge, not broken.
    With no query over a limit, a p99 passes early stopping from 459 queries."""
    return p.kind == "probe" and p.why == EARLY_STOPPING and p.more_queries > 0


def bisect(flags: dict[str, str], cfg: Config, own: dict[str, str], root: Path,
           say: Any) -> tuple[list[Probe], float]:  # fmt: skip
    """The bound and the probes; the highest QPS that held (0.0 if none)."""
    res, probe_ms = float(own["search_resolution"]), float(own["search_probe_ms"])
    queries = int(float(own["search_probe_queries"]))
    probes: list[Probe] = []
    again = 0  # runs again at this QPS for early stopping's queries
    if own["search_max"]:
        hi = float(own["search_max"])
    else:
        b = run_probe(flags, cfg, "bound", 0.0, root / "00-offline-bound", probe_ms, queries)
        probes.append(b)
        hi = b.qps = max(b.completed_qps, steady_rate(Path(b.run_dir)))
        say(b)
        if hi <= 0:
            raise ConfigError(f"the Offline bound run gave no rate: {b.why or b.validity}")
    lo, broke, grown = 0.0, False, 0
    m_lo: float | None = None  # the margins of the runs at lo and hi (search_aim.margin)
    m_hi: float | None = None
    aimed = False  # the last probe was aimed (then, if it did not halve the bracket, bisect)
    q = float(own["search_start"]) if own["search_start"] else 0.9 * hi
    if q >= hi:
        print(f"note: --search_start={q:g} is not below the bound {hi:.2f}; starting at 90% of it")
        q = 0.9 * hi
    while True:
        q = down(q, res)
        if q <= lo:
            q = round(lo + res, 9)
        if q >= hi or hi - lo <= res + 1e-9:
            if broke:
                break
            # nothing broke below the bound: the bound itself is probed, and while it holds
            # (an Offline run can undercount, e.g. when long answers finish alone) 1.5x it,
            # five times at most, then the search bisects below the first that broke
            if grown == 5:
                print(f"note: every probe held, up to {lo:g} QPS; no limit found above it")
                break
            q, grown = max(down(hi, res), round(lo + res, 9)), grown + 1
        p = run_probe(flags, cfg, "probe", q, root / f"{len(probes):02d}-server-{q:g}", probe_ms,
                      queries, own["search_stop_early"] == "true")  # fmt: skip
        probes.append(p)
        say(p)
        if undecided(p) and again < 2:  # LoadGen's count assumes every added query is in time
            again += 1
            queries = max(queries, math.ceil((p.issued + p.more_queries) * 11 / 10))
            print(f"note: probes issue at least {queries} queries from now on: at {q:g} QPS "
                  f"LoadGen's early stopping needed {p.more_queries} more than {p.issued} "
                  f"to judge a p99 (its latencies met the limits); {q:g} QPS again",
                  flush=True)  # fmt: skip
            continue
        again = 0
        longer = math.ceil(8 * p.latency_p90_s) * 1000
        if own["search_lengthen"] == "true" and too_short(p) and longer > probe_ms:
            print(f"note: probes lengthened from {probe_ms / 1000:g} s to {longer / 1000:g} s: "
                  f"a request lives {p.latency_p90_s:.1f} s (p90) and the probe issued for "
                  f"{p.window_s:.1f} s, too short for a backlog to show; {q:g} QPS again",
                  flush=True)  # fmt: skip
            probe_ms = longer
            continue
        grow = p.holds and q >= hi  # the bound held: the next probe is 1.5x it, at once
        width = hi - lo
        if p.holds:
            lo, hi, m_lo = q, (q * 1.5 if grow else hi), p.margin
            m_hi = None if grow else m_hi
        else:
            hi, broke, m_hi = q, True, p.margin
        if grow:
            q, aimed = hi, False
        elif aimed and hi - lo > width / 2:  # (a margin that misleads costs one step)
            q, aimed = (lo + hi) / 2, False
        else:
            q = aim(lo, hi, m_lo, m_hi, res)
            aimed = q != (lo + hi) / 2
    return probes, lo


def confirm(flags: dict[str, str], cfg: Config, root: Path, q: float, res: float,
            say: Any, stop: bool = False) -> tuple[list[Probe], float]:  # fmt: skip
    """Full-length runs from ``q`` down (1% or one resolution step a time, whichever is
    more; three at most): the first that holds."""
    runs: list[Probe] = []
    for _ in range(3):
        p = run_probe(flags, cfg, "confirm", q, root / f"confirm-{q:g}", None, stop=stop)
        runs.append(p)
        say(p)
        if p.holds:
            return runs, q
        q = down(q - max(res, 0.01 * q), res)
        if q <= 0:
            break
    return runs, 0.0


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        for k, (d, h) in SEARCH_FLAGS.items():
            print(f"  --{k}={d or 'VALUE'}  {h}")
        return 0
    cfg, flags, own = search_plan(argv)
    root = results_root(cfg) / f"search-{time.strftime('%Y.%m.%d-%H.%M.%S')}"
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()

    seen: list[Probe] = []  # every finished run, for what an interrupted search leaves
    warned: list[Probe] = []

    def say(p: Probe) -> None:
        seen.append(p)
        if own["search_lengthen"] == "false" and too_short(p) and not warned:
            warned.append(p)  # once: a backlog cannot show in a probe shorter than this
            print(f"note: probes are short for this workload: a request lives "
                  f"{p.latency_p90_s:.1f} s (p90) and a probe issues for {p.window_s:.1f} s, so "
                  f"a growing backlog "
                  f"barely shows; --search_probe_ms of at least "
                  f"{math.ceil(8 * p.latency_p90_s) * 1000} is safer", flush=True)  # fmt: skip
        verdict = "holds" if p.holds else f"breaks: {p.why}"
        if p.stopped_s:
            verdict = f"breaks ({p.why}, after {p.stopped_s:.1f} s)"
        if p.kind == "bound":
            print(f"offline bound: {p.qps:.2f} samples/s while full ({p.completed_qps:.2f} to "
                  f"the last completion; {p.wall_s:.0f} s)", flush=True)  # fmt: skip
            return
        print(f"{p.kind} {p.qps:g} QPS: completed {p.completed_qps:.2f}/s ({p.delivered:.1%}), "
              f"p99 TTFT {p.ttft_p99_ms:.0f} ms, TPOT {p.tpot_p99_ms:.1f} ms, "
              f"{p.wall_s:.0f} s: {verdict}", flush=True)  # fmt: skip

    from harness.run.search_loadgen import loadgen_peak
    from harness.run.search_report import write_results

    server, served = None, cfg
    if cfg.launch_server:  # one server for every run, as python -m harness has
        server = launched_server(cfg, root / "server.log")
        print(f"server: {server.spec.kind} at {server.url} (log {server.log_path})", flush=True)
        served = served_by(cfg, server)
        for key in ("server_urls", "triton_server_urls", "endpoint_api"):
            v = getattr(served, key)
            if v:
                flags[key] = ",".join(v) if isinstance(v, list) else str(v)
    stop, why = stops_early(served, own["search_stop_early"])
    own = {**own, "search_stop_early": "true" if stop else "false"}
    print(f"probes {'stop' if stop else 'do not stop'} once settled INVALID: {why}", flush=True)
    DRIVER.install()
    try:
        find = loadgen_peak if own["search_algorithm"] == "loadgen" else bisect
        probes, peak = find(flags, cfg, own, root, say)
        chosen = peak
        if peak > 0 and own["search_confirm"] == "true":
            runs, chosen = confirm(flags, cfg, root, peak, float(own["search_resolution"]), say,
                                   own["search_stop_early"] == "true")  # fmt: skip
            probes += runs
    except Interrupted as exc:  # the runs so far, written down before the exit
        out = write_results(root, cfg, [asdict(p) for p in seen], 0.0, 0.0,
                            time.monotonic() - t0)  # fmt: skip
        print(f"search interrupted: its {len(seen)} finished runs are in {out / 'search.md'}",
              file=sys.stderr)  # fmt: skip
        return exit_status(exc.signum)
    finally:
        DRIVER.uninstall()
        if server is not None:
            server.stop(grace_s=15.0 if DRIVER.signum is None else 3.0)
    wall = time.monotonic() - t0
    out = write_results(root, cfg, [asdict(p) for p in probes], peak, chosen, wall)
    if chosen > 0:
        print(f"peak: {chosen:g} QPS holds ({len(probes)} runs, {wall:.0f} s); "
              f"user.conf: {out / 'user.conf'}")  # fmt: skip
        return 0
    print(f"no QPS held ({len(probes)} runs, {wall:.0f} s); see {out / 'search.md'}")
    return 1
