"""``python -m harness serve``: settings in (``harness.serve.options``), the front built
over its core, served until SIGTERM or Ctrl-C, then drained (nothing new admitted, what is in
flight given ``--drain_s`` to finish) and the core closed."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

from harness.serve import options
from harness.serve.front import ServingFront
from harness.serve.guard import Limits, load_keys
from llmlib.config.settings import resolve
from llmlib.data.tokenizer import load_tokenizer
from llmlib.serving.registry import get_core_class


async def serve(front: ServingFront, host: str, port: int) -> None:
    from aiohttp import web

    front.loop = asyncio.get_running_loop()
    # the drain below is the grace: cleanup then cancels what is left, not waits 60 s more
    runner = web.AppRunner(front.app(), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"llmlib serving front: http://{host}:{bound} (core {front.cfg.core_type})", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        front.loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    # drain: nothing new is admitted (503), what is in flight gets up to drain_s to finish
    left = await front.guard.drain(front.drain_s)
    if left:
        print(
            f"llmlib serving front: {left} requests still in flight after "
            f"{front.drain_s:g} s of draining; they are cut",
            file=sys.stderr,
            flush=True,
        )
    await runner.cleanup()
    front.core.close()


def main(argv: list[str]) -> int:
    from harness.cli import parse_flags
    from harness.serve import front as front_module

    cut = argv.index("--") if "--" in argv else len(argv)
    args = options.parse(front_module.__doc__ or "", argv[:cut])
    core_flags, _ = parse_flags(argv[cut + 1 :])  # the core's own harness flags, checked
    tok = load_tokenizer(args.tokenizer_path) if args.tokenizer_path else None
    explicit: dict[str, Any] = {
        "core_type": args.core_type,
        "engine_profile": args.engine_profile,
        "dummy_fail_after": args.dummy_fail_after,
        "tiny_llama_model": args.tiny_llama_model,
    }
    if args.routing_config:
        explicit["routing_config"] = args.routing_config
    if "routing_stats_file" not in core_flags:  # the front's /metrics has them, not a file
        explicit["routing_stats_file"] = ""
    if args.tokenizer_path:
        explicit["tokenizer_path"] = args.tokenizer_path
    if tok is not None:
        explicit["vocab_size"] = tok.vocab_size
    cfg = resolve(core_flags, benchmark="tiny", scenario="server", explicit=explicit)
    get_core_class(cfg.core_type).validate_config(cfg)
    limits = Limits(
        api_keys=load_keys(args.api_keys_file),
        rate=args.rate_limit,
        burst=args.rate_burst,
        max_body_bytes=args.max_body_bytes,
        max_in_flight=args.max_in_flight,
        timeout_s=args.request_timeout_s,
        max_batch=args.max_batch,
        max_tokens=args.max_tokens_cap,
        max_prompt_tokens=args.max_prompt_tokens,
    )
    front = ServingFront(
        cfg,
        tok,
        args.model,
        token_ids=not args.no_token_ids,
        reasoning_tokens=args.reasoning_tokens,
        limits=limits,
    )
    front.drain_s = args.drain_s
    front.per_token = args.stream_events == "token"
    asyncio.run(serve(front, args.host, args.port))
    return 0
