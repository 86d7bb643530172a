"""``python -m harness serve``'s settings: flags over environment over a YAML file.

Every flag ``--name`` may also come from ``$LLMLIB_SERVE_NAME`` (upper case) or from the
YAML mapping given by ``--config FILE`` (``name: value``); a flag on the command line wins
over the environment, which wins over the file. An unknown key in the file or in the
environment, a value of the wrong kind, or a number that is not finite or out of range is
one line (``error: ...``) and exit status 2, before anything starts.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

import yaml

from harness.argparser import ArgParser
from llmlib.errors import ConfigError

ENV_PREFIX = "LLMLIB_SERVE_"


def _number(kind: type, low: float, high: float = math.inf, low_open: bool = False) -> Any:
    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if isinstance(v, float) and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if v < low or v > high or (low_open and v == low):
            lo = "(" if low_open else "["
            raise argparse.ArgumentTypeError(f"{text!r} is not in {lo}{low:g}, {high:g}]")
        return v

    parse.__name__ = kind.__name__
    return parse


def parser(doc: str) -> argparse.ArgumentParser:
    ap = ArgParser(
        prog="python -m harness serve",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--config", default="", help="a YAML file of these settings (name: value)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument(
        "--port", type=_number(int, 0, 65535), default=8000, help="0: any free port (printed)"
    )
    ap.add_argument("--core_type", default="dummy")
    ap.add_argument("--engine_profile", default="cpu-tiny", help="the dummy core's profile")
    ap.add_argument("--tokenizer_path", default="", help="tokenizer.json directory (text I/O)")
    ap.add_argument(
        "--tiny_llama_model",
        default="build/tiny-model",
        help="the model directory of core_type tiny_llama",
    )
    ap.add_argument(
        "--routing_config",
        default="",
        help="core_type routing: its YAML (default configs/routing/default.yaml)",
    )
    ap.add_argument("--model", default="llmlib-dummy", help="the model name served")
    ap.add_argument("--dummy_fail_after", type=_number(int, -1), default=-1)
    ap.add_argument(
        "--reasoning_tokens",
        type=_number(int, 0),
        default=0,
        help="answer as a reasoning model: the first N output tokens are reasoning "
        "(chat: reasoning_content deltas; completions: text ending in </think>)",
    )
    ap.add_argument(
        "--no_token_ids",
        action="store_true",
        help="ignore return_token_ids (behave as a server that sends text only)",
    )
    ap.add_argument(
        "--stream_events",
        choices=("chunk", "token"),
        default="chunk",
        help="chunk: one SSE event for each answer the core gives (first token, then the "
        "rest); token: one event a token, as engines stream",
    )
    g = ap.add_argument_group("limits (harness.serve.guard)")
    g.add_argument(
        "--api_keys_file",
        default="",
        help="API keys, one a line (also $LLMLIB_API_KEYS, a comma list); "
        "with keys, every API call needs Authorization: Bearer KEY",
    )
    g.add_argument(
        "--rate_limit",
        type=_number(float, 0),
        default=0.0,
        help="requests a second per key (per client without keys); 0: none",
    )
    g.add_argument(
        "--rate_burst",
        type=_number(int, 0),
        default=0,
        help="requests at once per key (0: the rate, at least 1)",
    )
    g.add_argument(
        "--max_in_flight",
        type=_number(int, 1),
        default=1024,
        help="requests served at once; one more gets 429 at once",
    )
    g.add_argument("--max_body_bytes", type=_number(int, 1), default=8 << 20)
    g.add_argument(
        "--max_batch",
        type=_number(int, 1),
        default=256,
        help="prompts in one /generate or /loglikelihood",
    )
    g.add_argument(
        "--max_tokens_cap",
        type=_number(int, 1),
        default=4096,
        help="the most max_tokens a request may ask for",
    )
    g.add_argument("--max_prompt_tokens", type=_number(int, 1), default=32768)
    g.add_argument("--request_timeout_s", type=_number(float, 0, low_open=True), default=600.0)
    g.add_argument(
        "--drain_s",
        type=_number(float, 0),
        default=30.0,
        help="on SIGTERM: stop admitting, finish what is in flight within this, exit",
    )
    return ap


def parse(doc: str, argv: list[str], env: dict[str, str] | None = None) -> argparse.Namespace:
    """The settings: ``argv`` over ``env`` (``LLMLIB_SERVE_*``) over ``--config``'s YAML."""
    env = dict(os.environ if env is None else env)
    ap = parser(doc)
    known = {a.dest for a in ap._actions if a.dest not in ("help", "config")}
    first, _ = ap.parse_known_args(argv)
    layered: dict[str, Any] = {}
    if first.config:
        layered.update(_yaml(Path(first.config), known))
    for name, value in env.items():
        if name.startswith(ENV_PREFIX):
            key = name[len(ENV_PREFIX) :].lower()
            if key not in known:
                raise ConfigError(
                    f"${name}: serve has no setting {key!r} (python -m harness serve --help)"
                )
            layered[key] = value
    # defaults that are strings go through each flag's type, as a command-line value does
    bools = {a.dest for a in ap._actions if isinstance(a, argparse._StoreTrueAction)}
    for key, value in layered.items():
        if key in bools:
            layered[key] = _bool(key, value)
        else:
            layered[key] = str(value)
    ap.set_defaults(**layered)
    return ap.parse_args(argv)


def _yaml(path: Path, known: set[str]) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path} is not YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path} must be a mapping of setting: value")
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"--config {path}: serve has no setting {key!r}")
        if isinstance(value, dict | list):
            raise ConfigError(f"--config {path}: {key} must be a single value")
    return data


def _bool(key: str, value: Any) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"serve: {key} must be true or false, got {value!r}")
