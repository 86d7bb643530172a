"""``python -m harness``: parse flags, validate everything up front, then run each
(benchmark, scenario, mode) in its own process and results directory (``harness.driver``),
and print a table.

Bad input exits with status 2 and one line naming the bad value and the valid choices.
"""

from __future__ import annotations

import difflib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from llmlib.config import FIELDS, Config, benchmark_names, resolve
from llmlib.datasets import TEXT_FORMATS, check_source
from llmlib.engine_model import profile_from_config
from llmlib.errors import ConfigError, LLMLibError, UnknownNameError
from llmlib.launch import ServerSpec, parse_server_args
from llmlib.policies import POLICIES
from llmlib.registry import core_names, get_core_class
from llmlib.tokenizer import load_tokenizer

from .driver import DRIVER, launched_server, results_root, run_tests
from .interrupt import Interrupted, exit_status
from .runner import (
    check_datasets,
    check_loadgen_targets,
    check_pools,
    compliance_audit_config,
)

_ACTIONS = ("help", "print_config")


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
