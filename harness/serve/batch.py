"""The serving front's batch API over its core: ``POST /generate`` (many prompts, sampling
options, stop strings -> completions and usage) and ``POST /loglikelihood`` (prompt and
continuation pairs -> each continuation's summed token log-probability), with the probes
``/healthz`` (the process is up) and ``/readyz`` (the model is loaded and the front admits
requests). The schemas are ``harness.serve.schemas``'; the limits are the front's.

Sampling (``temperature``, ``top_p``, ``seed``) goes to the core in each request's ``extra``:
a core that samples honours it (``tiny_llama``); the ``dummy`` core's tokens come from its
engine model whatever is asked. ``stop`` is applied here, on the decoded text: the text ends
before the first stop string and ``token_ids`` are the tokens before the one it begins in.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from harness.serve.schemas import (
    Completion,
    GenerateRequest,
    GenerateResponse,
    LoglikelihoodRequest,
    LoglikelihoodResponse,
    Usage,
    first_error,
)
from llmlib.errors import LLMLibError
from llmlib.serving.registry import cores_that_can

if TYPE_CHECKING:
    from harness.serve.front import ServingFront


class ApiError(Exception):
    def __init__(self, status: int, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.status, self.reason = status, reason


def _error(front: ServingFront, exc: ApiError) -> Any:
    from aiohttp import web

    if exc.status < 500:
        front.metrics.rejected[exc.reason].inc()
    return web.json_response(
        {"error": {"message": str(exc), "code": exc.status}}, status=exc.status
    )


def _ids(front: ServingFront, prompt: str | list[int], what: str, bos: bool = True) -> list[int]:
    if isinstance(prompt, list):
        ids = prompt
    elif front.tok is None:
        raise ApiError(
            400, f"{what}: text needs a tokenizer (start with --tokenizer_path) or send token ids"
        )
    else:
        ids = front.tok.encode(prompt, add_bos=bos)
    lim = front.limits
    vocab = getattr(front.cfg, "vocab_size", 0) or 0
    if vocab and ids and max(ids) >= vocab:
        raise ApiError(400, f"{what}: token id {max(ids)} is not below the vocabulary's {vocab}")
    if len(ids) > lim.max_prompt_tokens:
        raise ApiError(
            413,
            f"{what}: {len(ids)} tokens, over the limit of {lim.max_prompt_tokens}",
            "too_large",
        )
    return ids


def _batch(front: ServingFront, n: int) -> None:
    if n > front.limits.max_batch:
        raise ApiError(
            413,
            f"{n} prompts in one request, over the limit of {front.limits.max_batch}",
            "too_large",
        )


async def _body(request: Any, model: Any) -> Any:
    try:
        return model.model_validate_json(await request.read())
    except ValidationError as exc:
        raise ApiError(400, first_error(exc)) from None


def _cut(front: ServingFront, toks: np.ndarray, stops: list[str]) -> Completion:
    text = front._text(toks)
    at = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    if at < 0:
        return Completion(text=text, token_ids=[int(t) for t in toks], finish_reason="length")
    keep = 0  # the tokens whose text lies wholly before the stop
    while keep < len(toks) and len(front._text(toks[: keep + 1])) <= at:
        keep += 1
    return Completion(text=text[:at], token_ids=[int(t) for t in toks[:keep]], finish_reason="stop")


async def generate(front: ServingFront, request: Any) -> Any:
    from aiohttp import web

    try:
        body: GenerateRequest = await _body(request, GenerateRequest)
        _batch(front, len(body.prompts))
        if body.max_tokens > front.limits.max_tokens:
            raise ApiError(
                400,
                f"max_tokens: {body.max_tokens}, over this server's cap of "
                f"{front.limits.max_tokens}",
            )
        prompts = [_ids(front, p, f"prompts.{i}") for i, p in enumerate(body.prompts)]
    except ApiError as exc:
        return _error(front, exc)
    extra = {"temperature": body.temperature, "top_p": body.top_p, "seed": body.seed}
    subs = [front._submit(p, body.max_tokens, extra, stream=False) for p in prompts]
    try:
        finals = await asyncio.gather(*(front._final(q) for _, q in subs))
    finally:
        for rid, _ in subs:
            front.queues.pop(rid, None)
    failed = [r.error for r in finals if r.error is not None]
    if failed:
        front.metrics.outcome["failed"].inc(len(prompts))
        msg = f"{len(failed)} of {len(prompts)} prompts failed: {failed[0]}"
        headers = front.routes.headers([rid for rid, _ in subs])
        body_err = {"error": {"message": msg, "code": 500}}
        return web.json_response(body_err, status=500, headers=headers)
    front.metrics.outcome["success"].inc(len(prompts))
    stops = body.stops()
    done = [_cut(front, np.asarray(r.output_tokens), stops) for r in finals]
    n_out = sum(len(c.token_ids) for c in done)
    front.metrics.generated.inc(n_out)
    n_in = sum(map(len, prompts))
    usage = Usage(prompt_tokens=n_in, completion_tokens=n_out, total_tokens=n_in + n_out)
    out = GenerateResponse(completions=done, usage=usage)
    headers = front.routes.headers([rid for rid, _ in subs])
    return web.Response(
        body=out.model_dump_json(), content_type="application/json", headers=headers
    )


async def loglikelihood(front: ServingFront, request: Any) -> Any:
    from aiohttp import web

    core = front.core
    try:
        if not core.capabilities.loglikelihood:
            can = ", ".join(cores_that_can("loglikelihood")) or "none installed here"
            raise ApiError(
                501, f"core type {front.cfg.core_type} cannot score text; cores that can: {can}"
            )
        body: LoglikelihoodRequest = await _body(request, LoglikelihoodRequest)
        _batch(front, len(body.prompts))
        ctx = [_ids(front, p, f"prompts.{i}") for i, p in enumerate(body.prompts)]
        cont = [
            _ids(front, c, f"continuations.{i}", bos=False)
            for i, c in enumerate(body.continuations)
        ]
        for i, c in enumerate(cont):
            if not c:
                raise ApiError(400, f"continuations.{i}: its text is no token")
    except ApiError as exc:
        return _error(front, exc)
    loop = asyncio.get_running_loop()
    try:
        ll = await loop.run_in_executor(None, core.loglikelihood, ctx, cont)
    except (LLMLibError, ValueError, RuntimeError, NotImplementedError) as exc:
        front.metrics.outcome["failed"].inc()
        body_err = {"error": {"message": f"scoring failed: {exc}", "code": 500}}
        return web.json_response(body_err, status=500)
    front.metrics.outcome["success"].inc()
    out = LoglikelihoodResponse(ll=[float(x) for x in ll])
    return web.Response(body=out.model_dump_json(), content_type="application/json")


async def healthz(front: ServingFront, request: Any) -> Any:
    from aiohttp import web

    return web.json_response({"status": "up"})


async def readyz(front: ServingFront, request: Any) -> Any:
    from aiohttp import web

    if front.guard.draining:
        return web.json_response({"status": "draining"}, status=503)
    try:
        front.core.run_health_check()
    except LLMLibError as exc:
        return web.json_response({"status": str(exc)}, status=503)
    return web.json_response({"status": "ready", "model": front.model})
