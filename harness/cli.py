"""``python -m harness``: parse flags, validate everything up front, then run each
(benchmark, scenario, mode) in its own process and results directory (``harness.run.driver``),
and print a table.

Bad input exits with status 2 and one line naming the bad value and the valid choices.
"""

from __future__ import annotations

import difflib
import importlib
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

from harness.run.driver import DRIVER, launched_server, results_root, run_tests
from harness.run.interrupt import Interrupted, exit_status
from harness.run.prepare import (
    check_datasets,
    check_loadgen_targets,
    check_pools,
    compliance_audit_config,
    required_compliance,
)
from llmlib.config.settings import FIELDS, Config, benchmark_names, canonical, resolve
from llmlib.data.loaders import TEXT_FORMATS, check_source
from llmlib.data.tokenizer import load_tokenizer
from llmlib.deploy.launch import ServerSpec, parse_server_args
from llmlib.errors import ConfigError, LLMLibError, UnknownNameError
from llmlib.eval.rules import check_loadgen
from llmlib.model.engine import profile_from_config
from llmlib.serving.policies import POLICIES
from llmlib.serving.registry import core_names, get_core_class

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
        name = canonical(name.replace("-", "_"))
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
        formerly = "".join(f"  (formerly --{a})" for a in f.aliases)
        lines.append(f"  --{f.name}=<{typ}>  default: {default!s}{env}{formerly}")
        lines.append(f"      {f.help}")
    lines += [
        "",
        f"core types: {', '.join(core_names())}",
        f"benchmarks: {', '.join(benchmark_names(FIELDS['config_dir'].default))}",
        f"traffic policies: {', '.join(POLICIES)}",
        "",
        "other commands (python -m harness COMMAND --help):",
        *(f"  {n:<15} {what}" for n, (_, what) in COMMANDS.items()),
    ]
    return "\n".join(lines)


def validate(cfg: Config) -> None:
    """Everything that can be checked before a process is started."""
    check_loadgen()  # an old LoadGen would fail inside the first test
    if cfg.core_type not in core_names():
        raise UnknownNameError("core type", cfg.core_type, core_names())
    check_pools(cfg)  # policy names and flags, disaggregated pools
    check_loadgen_targets(cfg)  # a rate whose schedule LoadGen could not hold
    for name in ("user_conf", "audit_config"):
        path = getattr(cfg, name)
        if path and not Path(path).is_file():
            raise ConfigError(f"--{name}: file not found: {path}")
    get_core_class(cfg.core_type).validate_config(cfg)
    get_core_class(cfg.core_type).preflight(cfg)
    if cfg.launch_server:
        want = "triton_grpc" if cfg.launch_server == "triton" else "openai"
        if cfg.core_type != want:
            raise ConfigError(f"--launch_server={cfg.launch_server} runs with --core_type={want}")
        if cfg.server_urls or cfg.triton_server_urls:
            raise ConfigError("--launch_server and the servers' URLs: give one of them")
        ServerSpec(cfg.launch_server, cfg.server_model).command()  # a model, a known kind
        parse_server_args(cfg.server_args)
    if cfg.core_type == "dummy":
        profile_from_config(cfg)
    tests = required_compliance(cfg)
    for test in tests:
        compliance_audit_config(cfg, test)
    if "TEST07" in tests and not (
        cfg.tokenizer_path
        and (cfg.test07_dataset_path or cfg.accuracy_dataset_path or cfg.dataset_path)  # fmt: skip
    ):
        raise ConfigError(
            f"TEST07 scores {cfg.benchmark}'s responses on its compliance set: give "
            "--test07_dataset_path (e.g. acc_eval_compliance_gpqa.parquet) and --tokenizer_path"
        )
    for name in ("dataset_path", "accuracy_dataset_path", "test07_dataset_path"):
        path = getattr(cfg, name)
        if path or (name == "dataset_path" and cfg.dataset_format in TEXT_FORMATS):
            check_source(path, cfg.dataset_format, bool(cfg.tokenizer_path), name)
    if cfg.lcb_tests_path and not Path(cfg.lcb_tests_path).exists():
        raise ConfigError(f"--lcb_tests_path: not found: {cfg.lcb_tests_path}")
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


# Every command of ``python -m harness``: name -> ("module:function", what it does). Each
# function takes the remaining arguments and returns an exit status; LLMLibError from any of
# them is one line and status 2 (``one_line``).
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("harness.serve.run:main", "llmlib's OpenAI-compatible serving front"),
    "launch": ("harness.cli:launch_main", "start a server and keep it up until Ctrl-C"),
    "benchmarks": ("harness.tools.benchmarks:main", "the benchmarks, their limits and targets"),
    "search": ("harness.run.search:main", "the highest Server QPS that holds the limits"),
    "compare": ("harness.report.compare:main", "runs side by side"),
    "evaluate": ("harness.report.evaluate:main", "score accuracy runs"),
    "scorecard": ("harness.report.scorecard:main", "ship or no-ship against a baseline"),
    "simulate": ("harness.tools.simulate:main", "a fleet of modelled engines in virtual time"),
    "router": ("harness.tools.router:main", "the router's corpus, training, eval, bench"),
    "tiny-model": ("harness.tools.tiny_model:main", "build the tiny tokenizer and Llama"),
    "topology": ("llmlib.deploy.topology:main", "this machine's CPUs, NUMA nodes and GPUs"),
    "triton-setup": ("llmlib.deploy.triton.setup:main", "make Triton runnable (make triton)"),
    "bench": ("harness.bench.bench:main", "the harness's overhead, fidelity, path cost"),
    "bench-endpoint": ("harness.bench.endpoint:main", "the HTTP core as a client"),
    "bench-closed-loop": ("harness.bench.closed_loop:main", "the simplest client, for engines"),
    "bench-front": ("harness.bench.front:main", "the serving front: /route, capacity, overload"),
    "bench-client": ("harness.bench.client_cost:main", "the endpoint client's CPU per event"),
    "bench-triton": ("harness.bench.triton:main", "the Triton core against a real Triton"),
    "soak": ("harness.bench.soak:main", "a long Server run against failing fronts"),
}


def command(name: str) -> Callable[[list[str]], int]:
    module, _, func = COMMANDS[name][0].partition(":")
    return cast(Callable[[list[str]], int], getattr(importlib.import_module(module), func))


def one_line(run: Callable[[], int]) -> int:
    """Run a command; llmlib's errors (bad input, a backend that cannot start) become one
    line on stderr and exit status 2."""
    try:
        return run()
    except LLMLibError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_run_one"]:  # the driver's child: one test (its errors are its own)
        from harness.run.runner import main_child

        return main_child(argv[1])
    if argv[:1] and argv[0] in COMMANDS:
        return one_line(lambda: command(argv[0])(argv[1:]))
    return one_line(lambda: run_main(argv))


def run_main(argv: list[str]) -> int:
    """``python -m harness [--flags]``: plan, check, then run every test."""
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

    flags, _ = parse_flags(argv)
    cfg = resolve(flags)
    if not cfg.launch_server:
        raise ConfigError("launch needs --launch_server=vllm|trtllm|llamacpp|llmlib|triton")
    log_path = Path(cfg.log_dir) / f"server-{time.strftime('%Y.%m.%d-%H.%M.%S')}.log"
    server = launched_server(cfg, log_path)
    print(f"server: {server.spec.kind} at {server.url} (log {server.log_path}); Ctrl-C stops it")
    if server.spec.kind == "triton":
        grpc = f"{server.spec.host}:{server.spec.grpc_port}"
        print(f"  --core_type=triton_grpc --triton_server_urls={grpc}", flush=True)
    else:
        print(f"  --core_type=openai --server_urls={server.url}", flush=True)
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
