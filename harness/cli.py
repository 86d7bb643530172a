"""``python -m harness``: parse flags, validate everything up front, then run each
(benchmark, scenario, mode) in its own process and results directory, and print a table.

Bad input exits with status 2 and one line naming the bad value and the valid choices.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmlib.config import FIELDS, REPO_ROOT, Config, benchmark_names, resolve
from llmlib.datasets import TEXT_FORMATS, check_source
from llmlib.engine_model import profile_from_config
from llmlib.errors import ConfigError, LLMLibError, UnknownNameError
from llmlib.launch import LaunchedServer, ServerSpec, free_port, parse_server_args
from llmlib.policies import POLICIES
from llmlib.registry import core_names, get_core_class
from llmlib.tokenizer import load_tokenizer

from .interrupt import DriverSignals, Interrupted, exit_status, say_interrupted
from .report import console_table
from .runner import (
    MODE_DIR,
    check_datasets,
    check_loadgen_targets,
    check_pools,
    compliance_audit_config,
)

MODES = {
    "PerformanceOnly": ["PerformanceOnly"],
    "AccuracyOnly": ["AccuracyOnly"],
    "SubmissionRun": ["PerformanceOnly", "AccuracyOnly"],
}
_ACTIONS = ("help", "print_config")
DRIVER = DriverSignals()  # SIGINT/SIGTERM while tests run (harness.interrupt)


def parse_flags(argv: Sequence[str]) -> tuple[dict[str, str], set[str]]:
    """``--name=value`` / ``--name value`` / bare ``--bool_flag`` into raw strings."""
    flags: dict[str, str] = {}
    actions: set[str] = set()
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg in ("-h", "--help"):
            actions.add("help")
            continue
        if not arg.startswith("--"):
            raise ConfigError(
                f"unexpected argument '{arg}': flags look like --name=value (see --help)"
            )
        name, eq, value = arg[2:].partition("=")
        name = name.replace("-", "_")
        if name in _ACTIONS:
            actions.add(name)
            continue
        if name not in FIELDS:
            close = difflib.get_close_matches(name, [*FIELDS, *_ACTIONS], n=1, cutoff=0.6)
            hint = f" Did you mean '--{close[0]}'?" if close else ""
            raise ConfigError(f"Unknown flag '--{name}'.{hint} Run with --help for all flags.")
        if not eq:
            if FIELDS[name].type is bool and (i >= len(args) or args[i].startswith("--")):
                value = "true"
            elif i < len(args):
                value, i = args[i], i + 1
            else:
                raise ConfigError(f"flag '--{name}' needs a value")
        flags[name] = value
    return flags, actions


def help_text() -> str:
    lines = [
        "usage: python -m harness [--name=value ...]   (make run_harness RUN_ARGS=...)",
        "",
        "Precedence: explicit > flag > environment overlay > YAML (configs/) > default.",
        "Flag strings are key1:value1,key2:value2. --print_config shows every resolved",
        "value and where it came from.",
        "",
    ]
    group = None
    for f in FIELDS.values():
        if f.group != group:
            group = f.group
            lines.append(f"[{group}]")
        typ = f.type if isinstance(f.type, str) else f.type.__name__
        default = (
            ",".join(f.default) if f.type == "list" else (f.default if f.type != "flags" else "")
        )
        env = f"  (env {f.env})" if f.env else ""
        lines.append(f"  --{f.name}=<{typ}>  default: {default!s}{env}")
        lines.append(f"      {f.help}")
    lines += [
        "",
        f"core types: {', '.join(core_names())}",
        f"benchmarks: {', '.join(benchmark_names(FIELDS['config_dir'].default))}",
        f"traffic policies: {', '.join(POLICIES)}",
        "other commands: serve, launch, compare, evaluate, router, simulate, scorecard, "
        "topology (each with --help)",
    ]
    return "\n".join(lines)


def validate(cfg: Config) -> None:
    """Everything that can be checked before a process is started."""
    if cfg.core_type not in core_names():
        raise UnknownNameError("core type", cfg.core_type, core_names())
    check_pools(cfg)  # policy names and flags, disaggregated pools
    check_loadgen_targets(cfg)  # a rate whose schedule LoadGen could not hold
    for name in ("user_conf", "audit_config"):
        path = getattr(cfg, name)
        if path and not Path(path).is_file():
            raise ConfigError(f"--{name}: file not found: {path}")
    get_core_class(cfg.core_type).validate_config(cfg)
    if cfg.launch_server:
        want = "triton_grpc" if cfg.launch_server == "triton" else "trtllm_endpoint"
        if cfg.core_type != want:
            raise ConfigError(f"--launch_server={cfg.launch_server} runs with --core_type={want}")
        if cfg.trtllm_server_urls or cfg.triton_server_urls:
            raise ConfigError("--launch_server and the servers' URLs: give one of them")
        ServerSpec(cfg.launch_server, cfg.server_model).command()  # a model, a known kind
        parse_server_args(cfg.server_args)
    if cfg.core_type == "dummy":
        profile_from_config(cfg)
    for test in cfg.compliance_list:
        compliance_audit_config(cfg, test)
    if cfg.dataset_path or cfg.dataset_format in TEXT_FORMATS:
        check_source(cfg.dataset_path, cfg.dataset_format, bool(cfg.tokenizer_path))
    if cfg.tokenizer_path:
        load_tokenizer(cfg.tokenizer_path)  # a bad path fails here, before any process starts


def plan(flags: dict[str, str], env: dict[str, str] | None = None) -> list[Config]:
    """One resolved, validated Config per (benchmark, scenario)."""
    base = resolve(flags, env=env)
    known = benchmark_names(base.config_dir)
    for b in base.benchmarks:
        if b not in known:
            raise UnknownNameError("benchmark", b, known)
    return [
        resolve(flags, benchmark=b, scenario=s, env=env, validate=validate)
        for b in base.benchmarks
        for s in base.scenarios
    ]


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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_run_one"]:
        from .runner import main_child

        return main_child(argv[1])
    if argv[:1] == ["topology"]:
        from llmlib.topology import main as topology_main

        return topology_main(argv[1:])
    if argv[:1] == ["launch"]:
        return launch_main(argv[1:])
    if argv[:1] == ["serve"]:
        from .front import main as serve_main

        try:
            return serve_main(argv[1:])
        except LLMLibError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if argv[:1] in (["compare"], ["evaluate"], ["router"], ["simulate"], ["scorecard"]):
        from .compare import main as compare_main
        from .evaluate import main as evaluate_main
        from .router_cli import main as router_main
        from .scorecard import main as scorecard_main
        from .simulate import main as simulate_main

        sub = {
            "compare": compare_main,
            "evaluate": evaluate_main,
            "router": router_main,
            "simulate": simulate_main,
            "scorecard": scorecard_main,
        }
        try:
            return sub[argv[0]](argv[1:])
        except LLMLibError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    try:
        flags, actions = parse_flags(argv)
        if "help" in actions:
            print(help_text())
            return 0
        configs = plan(flags)
        if "print_config" in actions:
            print("\n\n".join(c.describe() for c in configs))
            return 0
        check_datasets(configs)
        top = results_root(configs[0])
    except LLMLibError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if Path("audit.config").is_file():
        print(
            f"note: {Path('audit.config').resolve()} is present. LoadGen would apply it "
            "silently; llmlib runs each test in its own directory and does NOT use it. "
            "Pass --audit_config=PATH to apply an audit config.",
            file=sys.stderr,
        )
    DRIVER.install()
    try:
        return run_tests(configs, top)
    except Interrupted as exc:
        return exit_status(exc.signum)
    finally:
        DRIVER.uninstall()


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


def launch_main(argv: list[str]) -> int:
    """``python -m harness launch --launch_server=KIND --server_model=...`` (``make
    run_llm_server``): start the server, print its URL, keep it up until Ctrl-C/SIGTERM."""
    import signal

    try:
        flags, _ = parse_flags(argv)
        cfg = resolve(flags)
        if not cfg.launch_server:
            raise ConfigError("launch needs --launch_server=vllm|trtllm|llamacpp|llmlib|triton")
        log_path = Path(cfg.log_dir) / f"server-{time.strftime('%Y.%m.%d-%H.%M.%S')}.log"
        server = launched_server(cfg, log_path)
    except LLMLibError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"server: {server.spec.kind} at {server.url} (log {server.log_path}); Ctrl-C stops it")
    if server.spec.kind == "triton":
        grpc = f"{server.spec.host}:{server.spec.grpc_port}"
        print(f"  --core_type=triton_grpc --triton_server_urls={grpc}", flush=True)
    else:
        print(f"  --core_type=trtllm_endpoint --trtllm_server_urls={server.url}", flush=True)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    try:
        while not stop["now"] and server.proc is not None and server.proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def served_by(cfg: Config, server: LaunchedServer) -> Config:
    """``cfg`` pointed at the launched server."""
    if server.spec.kind == "triton":
        return cfg.replace(triton_server_urls=[f"{server.spec.host}:{server.spec.grpc_port}"])
    return cfg.replace(trtllm_server_urls=[server.url])


def launched_server(cfg: Config, log_path: Path) -> LaunchedServer:
    """Start ``--launch_server`` and wait until it answers /health. Triton gets a model
    repository: ``--server_model`` itself when it is one, else one written next to the log
    serving that directory's tiny Llama (a Python-backend model, ``llmlib.triton_repo``)."""
    model, extra = cfg.server_model, {}
    if cfg.launch_server == "triton":
        model = str(triton_repository(cfg, log_path.parent / "triton_repo"))
        extra = {"grpc_port": free_port(), "metrics_port": free_port()}
    spec = ServerSpec(
        cfg.launch_server,
        model,
        port=cfg.server_port or free_port(),
        args=parse_server_args(cfg.server_args),
        **extra,
    )
    server = LaunchedServer(spec, log_path).start()
    server.wait_ready(cfg.server_ready_timeout_s)
    return server


def triton_repository(cfg: Config, where: Path) -> Path:
    """The repository Triton serves: ``--server_model`` when it holds config.pbtxt files,
    else one written at ``where`` for the tiny Llama in ``--server_model``."""
    from llmlib.triton_repo import generate_triton_config

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
            s = run_child(cfg, mode, run_dir, test)
            if s is None:
                failed += 1
                continue
            summaries.append(s)
            if cfg.test_mode == "SubmissionRun" and mode == "AccuracyOnly":
                accuracy_errors += score_submission_accuracy(run_dir)
    rule_errors = request_errors(configs[0], summaries)
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

    A SubmissionRun lays its runs out as a submission does and adds TEST06:
    ``results/<system>/<benchmark>/<scenario>/performance/run_1``, ``.../accuracy`` and
    ``compliance/<system>/<benchmark>/<scenario>/TEST06``. Other runs go to
    ``<system>/<benchmark>/<scenario>/<performance|accuracy|compliance/TEST>``."""
    tests = cfg.compliance_list
    if cfg.test_mode == "SubmissionRun":
        base = top / "results" / cfg.system_name / cfg.benchmark / cfg.scenario
        comp = top / "compliance" / cfg.system_name / cfg.benchmark / cfg.scenario
        runs: list[tuple[str, str | None, Path]] = [
            ("PerformanceOnly", None, base / "performance" / "run_1"),
            ("AccuracyOnly", None, base / "accuracy"),
        ]
        tests = list(dict.fromkeys([*tests, "TEST06"]))
        runs += [("PerformanceOnly", t, comp / t) for t in tests]
    else:
        base = top / cfg.system_name / cfg.benchmark / cfg.scenario
        runs = [(m, None, base / MODE_DIR[m]) for m in MODES[cfg.test_mode]]
        runs += [("PerformanceOnly", t, base / "compliance" / t) for t in tests]
    return [(m, t, d.resolve()) for m, t, d in runs]


def score_submission_accuracy(run_dir: Path) -> int:
    """Score a SubmissionRun's accuracy run (accuracy.txt next to its log); 1 if that is a
    failure for a submission (FAIL or INCOMPLETE), else 0."""
    from .evaluate import evaluate_run

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
