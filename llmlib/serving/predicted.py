"""The ``predicted_work`` traffic policy (issue 24): placement that knows how long each
answer will be (``llmlib.serving.policies`` registers it)."""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from typing import Any

from llmlib.errors import ConfigError
from llmlib.serving.policy_base import TrafficPolicy
from llmlib.serving.request import LLMRequest


def request_lengths(req: Any) -> tuple[int, int | None, int | None]:
    """(prompt tokens, reference output length or None, max new tokens or None) of an
    ``LLMRequest`` or the simulator's ``SimRequest`` (its output length is what it will
    decode; it carries no cap)."""
    if hasattr(req, "prompt_len"):
        return int(req.prompt_len), int(req.output_len), None
    out = req.output_len
    return len(req.input_tokens), None if out is None else int(out), int(req.max_new_tokens)


class PredictedWork(TrafficPolicy):
    """Each request to the core where it would share its decode with the least work.

    A request of ``L`` predicted tokens on core ``c`` decodes beside what ``c`` holds: each
    held request for the smaller of its remaining tokens and ``L``. The core with the least
    of that sum wins (ties: fewer pending, then the lowest index). For short requests it is
    least_pending; for long ones, the least remaining work. A held request's remaining
    tokens are its prediction less what it has decoded since placed, estimated from the
    core's TTFT and TPOT moving averages (``Telemetry``; none yet: nothing decoded), at least
    one. A batch of more than ``BATCH`` requests at once (Offline) is placed longest first on
    the least work (no per-request sum over what every core holds).

    What a request will decode comes from ``length``: ``oracle`` (its true length where the
    workload knows it: the ceiling a predictor can reach; else its max_new_tokens) or
    ``max_new_tokens`` (what a pool knows without a predictor; the simulator's requests carry
    no cap, so there every request counts alike: least_pending); ``prefill_weight`` x its
    prompt tokens is added. The policy keeps what it placed on each core and forgets what
    the core no longer holds (``bind_pending``), so the same code runs live and in the
    simulator."""

    name = "predicted_work"
    uses_telemetry = True
    uses_pending_ids = True
    tunables = ("prefill_weight", "length")
    prefill_weight = 0.0
    length = "oracle"
    LENGTHS = ("oracle", "max_new_tokens")
    BATCH = 64

    def __init__(self, num_cores: int, seed: int = 0) -> None:
        super().__init__(num_cores, seed)
        # per core: request id -> (placed at, ns; predicted tokens)
        self.placed: list[dict[int, tuple[int, float]]] = [{} for _ in range(num_cores)]
        self.pending_views: Sequence[Container[int]] = [{} for _ in range(num_cores)]

    def configure(self, flags: Mapping[str, Any]) -> None:
        flags = dict(flags)
        length = flags.pop("length", None)
        if length is not None:
            if length not in self.LENGTHS:
                raise ConfigError(f"predicted_work policy flag length: {length} is not one of "
                                  f"{', '.join(self.LENGTHS)}")  # fmt: skip
            self.length = str(length)
        super().configure(flags)

    def predict(self, req: Any) -> float:
        prompt, out, max_new = request_lengths(req)
        if self.length == "oracle" and out is not None:
            decode = out
        else:  # no cap known (the simulator's requests): every request alike, least_pending
            decode = 1 if max_new is None else max_new
        return decode + self.prefill_weight * prompt

    def settle(self, loads: list[int]) -> None:
        """Forget what a core has finished (it holds fewer than were placed on it)."""
        for c, placed in enumerate(self.placed):
            if len(placed) > loads[c]:
                held = self.pending_views[c]
                for i in [i for i in placed if i not in held]:
                    del placed[i]

    def remaining(self, c: int, now: int) -> list[float]:
        """What each request held by core ``c`` has still to decode at ``now``."""
        tel = self.telemetry[c]
        tpot, ttft = tel.tpot_ewma_ns, tel.ttft_ewma_ns or 0.0
        if not tpot:
            return [w for _, w in self.placed[c].values()]
        return [max(1.0, w - max(0.0, now - t - ttft) / tpot) for t, w in self.placed[c].values()]

    def assign(self, requests: Sequence[LLMRequest], loads: list[int]) -> list[int]:
        self.settle(loads)
        n = len(requests)
        reqs = list(requests)
        now = [_when(r) for r in reqs]
        work = [self.predict(r) for r in reqs]
        out = [0] * n
        cores = range(self.num_cores)
        if n > self.BATCH:  # longest first, each to the least remaining work
            total = [sum(self.remaining(c, now[0])) for c in cores]
            for k in sorted(range(n), key=lambda k: -work[k]):
                i = min(cores, key=lambda c: (total[c], loads[c], c))
                total[i] += work[k]
                out[k] = self._place(i, reqs[k], now[k], work[k], loads)
            return out
        for k in range(n):
            rem = [self.remaining(c, now[k]) for c in cores]
            shared = [sum(min(x, work[k]) for x in rem[c]) for c in cores]
            i = min(cores, key=lambda c: (shared[c], loads[c], c))
            out[k] = self._place(i, reqs[k], now[k], work[k], loads)
        return out

    def _place(self, i: int, req: Any, now: int, work: float, loads: list[int]) -> int:
        loads[i] += 1
        self.placed[i][_key(req)] = (now, work)
        return i


def _when(req: Any) -> int:
    """When a request is placed: its issue time (live) or arrival (simulator), in ns."""
    return int(getattr(req, "issue_ns", 0) or getattr(req, "arrival_ns", 0))


def _key(req: Any) -> int:
    """A request's id as its core's pending view knows it (the simulator's: ``id()``)."""
    rid = getattr(req, "request_id", None)
    return id(req) if rid is None else int(rid)
