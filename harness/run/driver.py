"""Running the planned tests: each (benchmark, scenario, mode) in a child process of its own
(``python -m harness _run_one``) and results directory, a launched server up around them,
signals passed on (``harness.run.interrupt``), the console table and the exit status."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from harness.report.report import console_table
from harness.run.interrupt import DriverSignals, Interrupted, say_interrupted
from harness.run.prepare import MODE_DIR, required_compliance, run_config
from llmlib.config.settings import REPO_ROOT, Config
from llmlib.deploy.launch import LaunchedServer, ServerSpec, free_ports, parse_server_args
from llmlib.errors import ConfigError, LLMLibError

DRIVER = DriverSignals()  # SIGINT/SIGTERM while tests run (harness.run.interrupt)


MODES = {
    "PerformanceOnly": ["PerformanceOnly"],
    "AccuracyOnly": ["AccuracyOnly"],
    "SubmissionRun": ["PerformanceOnly", "AccuracyOnly"],
}


def run_child(
    cfg: Config, mode: str, run_dir: Path, compliance: str | None = None
) -> dict[str, Any] | None:
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = run_dir / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "config": cfg.to_json(),
                "mode": mode,
                "run_dir": str(run_dir),
                "compliance": compliance,
            }
        )
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    rc = DRIVER.run([sys.executable, "-m", "harness", "_run_one", str(spec)], cwd=run_dir, env=env)
    if DRIVER.signum is not None:  # stopped by a signal: say where its results are, stop
        say_interrupted(run_dir, DRIVER.signum)
        raise Interrupted(DRIVER.signum)
    summary = run_dir / "summary.json"
    if rc != 0 or not summary.is_file():
        print(
            f"error: {cfg.benchmark}/{cfg.scenario}/{compliance or MODE_DIR[mode]} failed "
            f"(exit {rc}); "
            f"see {run_dir / 'harness.log'}",
            file=sys.stderr,
        )
        return None
    return json.loads(summary.read_text())


def run_tests(configs: list[Config], top: Path) -> int:
    """``run_all``, with the launched server (if any) up around it and stopped after,
    also when a signal stops the run (``Interrupted``)."""
    if not configs[0].launch_server:
        return run_all(configs, top)
    try:
        server = launched_server(configs[0], top / "server.log")
        print(f"server: {server.spec.kind} at {server.url} (log {server.log_path})")
    except LLMLibError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return run_all([served_by(c, server) for c in configs], top)
    finally:
        server.stop(grace_s=15.0 if DRIVER.signum is None else 3.0)


def results_root(cfg: Config) -> Path:
    """``<log_dir>/<timestamp>``, made now and checked writable (ConfigError if not)."""
    top = Path(cfg.log_dir) / time.strftime("%Y.%m.%d-%H.%M.%S")
    try:
        top.mkdir(parents=True, exist_ok=True)
        probe = top / ".writable"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"--log_dir: cannot write results under {cfg.log_dir}: {exc.strerror or exc}"
        ) from None
    return top


def served_by(cfg: Config, server: LaunchedServer) -> Config:
    """``cfg`` pointed at the launched server (llama.cpp's through its native API, token
    ids in and out, unless ``--endpoint_api`` says otherwise)."""
    if server.spec.kind == "triton":
        return cfg.replace(triton_server_urls=[f"{server.spec.host}:{server.spec.grpc_port}"])
    if server.spec.kind == "llamacpp" and cfg.endpoint_api == "auto":
        return cfg.replace(server_urls=[server.url], endpoint_api="llamacpp")
    return cfg.replace(server_urls=[server.url])


def launched_server(cfg: Config, log_path: Path) -> LaunchedServer:
    """Start ``--launch_server`` and wait until it answers /health. Triton gets a model
    repository: ``--server_model`` itself when it is one, else one written next to the log
    serving that directory's tiny Llama (a Python-backend model, ``llmlib.deploy.triton.repo``)."""
    model: str = cfg.server_model
    extra: dict[str, Any] = {}
    http, grpc, metrics = free_ports(3)
    if cfg.launch_server == "triton":
        model = str(triton_repository(cfg, log_path.parent / "triton_repo"))
        extra = {"grpc_port": grpc, "metrics_port": metrics}
    spec = ServerSpec(
        cfg.launch_server,
        model,
        port=cfg.server_port or http,
        args=parse_server_args(cfg.server_args),
        **extra,
    )
    server = LaunchedServer(spec, log_path).start()
    server.wait_ready(cfg.server_ready_timeout_s)
    return server


def triton_repository(cfg: Config, where: Path) -> Path:
    """The repository Triton serves: ``--server_model`` when it holds config.pbtxt files,
    else one written at ``where`` for the tiny Llama in ``--server_model``."""
    from llmlib.deploy.triton.repo import generate_triton_config

    src = Path(cfg.server_model)
    if any(src.glob("*/config.pbtxt")):
        return src
    n = int(cfg.triton_num_models_per_server)
    names = (
        [cfg.triton_model_name] if n == 1 else [f"{cfg.triton_model_name}_{i}" for i in range(n)]
    )
    for name in names:
        generate_triton_config(
            where, "python", name, model_dir=src, runtime_flags=cfg.runtime_flags
        )
    return where


def run_all(configs: list[Config], top: Path) -> int:
    """Every planned test, one child process each; the console table; the exit status."""
    root = top / configs[0].system_name
    summaries, failed, accuracy_errors = [], 0, 0
    for cfg in configs:
        for mode, test, run_dir in planned_runs(cfg, top):
            s = run_child(run_config(cfg, mode, test), mode, run_dir, test)
            if s is None:
                failed += 1
                continue
            summaries.append(s)
            if cfg.test_mode == "SubmissionRun" and mode == "AccuracyOnly":
                accuracy_errors += score_submission_accuracy(run_dir)
    rule_errors = request_errors(configs[0], summaries) + compliance_failures(summaries)
    if summaries:
        print()
        print(console_table(summaries))
        print()
        for s in summaries:
            print(f"report: {Path(s['run_dir']) / 'report.md'}")
        warned = 0
        for s in summaries:
            rules = s.get("rules") or {}
            if rules.get("level") != "error":
                warned += bool(rules.get("problems"))
                continue
            for p in rules.get("problems", []):
                rule_errors += 1
                print(
                    f"error (MLPerf run rules): {s['benchmark']}/{s['scenario']}: {p}",
                    file=sys.stderr,
                )
        if warned:
            print(
                f"note: {warned} run(s) would not meet MLPerf's run rules for a submission "
                "(fine for a local run; the reasons are in report.md)"
            )
    print(f"results: {(top if configs[0].test_mode == 'SubmissionRun' else root).resolve()}")
    return 1 if failed or rule_errors or accuracy_errors else 0


def compliance_failures(summaries: list[dict[str, Any]]) -> int:
    """Each compliance test that did not pass is an error, said on stderr; their count."""
    bad = [s for s in summaries if (s.get("compliance") or {}).get("result") == "FAIL"]
    for s in bad:
        comp = s["compliance"]
        why = f": {comp['problem']}" if comp.get("problem") else ""
        print(
            f"error (compliance): {s['benchmark']}/{s['scenario']}/{comp['test']} FAIL{why} "
            f"(see {s['run_dir']})",
            file=sys.stderr,
        )
    return len(bad)


def request_errors(cfg: Config, summaries: list[dict[str, Any]]) -> int:
    """With --fail_on_errors (auto: a SubmissionRun), each run with failed requests is an
    error, said on stderr; the count of such runs."""
    on = cfg.fail_on_errors == "true" or (
        cfg.fail_on_errors == "auto" and cfg.test_mode == "SubmissionRun"
    )
    bad = [s for s in summaries if s["harness"]["failed"]] if on else []
    for s in bad:
        h = s["harness"]
        print(
            f"error: {s['benchmark']}/{s['scenario']}/{s['mode']}: {h['failed']} of "
            f"{h['issued']} requests failed (--fail_on_errors; the reasons are in report.md)",
            file=sys.stderr,
        )
    return len(bad)


def planned_runs(cfg: Config, top: Path) -> list[tuple[str, str | None, Path]]:
    """(LoadGen mode, compliance test or None, run directory) for one (benchmark, scenario).

    A SubmissionRun lays its runs out as a submission does and adds the compliance tests
    its benchmark requires (TEST06; gpt-oss-120b: TEST07 and TEST09):
    ``results/<system>/<benchmark>/<scenario>/performance/run_1``, ``.../accuracy`` and
    ``compliance/<system>/<benchmark>/<scenario>/<TEST>``. Other runs go to
    ``<system>/<benchmark>/<scenario>/<performance|accuracy|compliance/TEST>``."""
    tests = required_compliance(cfg)
    if cfg.test_mode == "SubmissionRun":
        base = top / "results" / cfg.system_name / cfg.benchmark / cfg.scenario
        comp = top / "compliance" / cfg.system_name / cfg.benchmark / cfg.scenario
        runs: list[tuple[str, str | None, Path]] = [
            ("PerformanceOnly", None, base / "performance" / "run_1"),
            ("AccuracyOnly", None, base / "accuracy"),
        ]
        runs += [("PerformanceOnly", t, comp / t) for t in tests]
    else:
        base = top / cfg.system_name / cfg.benchmark / cfg.scenario
        runs = [(m, None, base / MODE_DIR[m]) for m in MODES[cfg.test_mode]]
        runs += [("PerformanceOnly", t, base / "compliance" / t) for t in tests]
    return [(m, t, d.resolve()) for m, t, d in runs]


def score_submission_accuracy(run_dir: Path) -> int:
    """Score a SubmissionRun's accuracy run (accuracy.txt next to its log); 1 if that is a
    failure for a submission (FAIL or INCOMPLETE), else 0."""
    from harness.report.evaluate import evaluate_run

    try:
        verdict = evaluate_run(run_dir)["verdict"]
    except LLMLibError as exc:
        print(f"error (accuracy): {run_dir}: {exc}", file=sys.stderr)
        return 1
    if verdict in ("FAIL", "INCOMPLETE"):
        print(f"error (accuracy): {run_dir}: {verdict}", file=sys.stderr)
        return 1
    if verdict == "UNSCORED":
        print(f"warning (accuracy): {run_dir}: no MLPerf target to score against", file=sys.stderr)
    return 0
