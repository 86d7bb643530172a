"""The serving front's ``/metrics``, through prometheus-client (one registry per front, so
two fronts in one process, as in tests, do not share counts)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()  # no *_created series: scrapers of an inference server do not use them

TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
TPOT_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.5,
)
REJECTIONS = ("auth", "rate", "queue_full", "too_large", "invalid", "draining", "timeout")


class FrontMetrics:
    """Every figure the front exports, labelled with the model served."""

    def __init__(self, model: str) -> None:
        self.registry = r = CollectorRegistry()
        m = ("model_name",)
        self.ttft = Histogram(
            "llmlib:time_to_first_token_seconds",
            "from a request's arrival to its first token written",
            m,
            buckets=TTFT_BUCKETS,
            registry=r,
        ).labels(model)
        self.tpot = Histogram(
            "llmlib:time_per_output_token_seconds",
            "mean time per output token after the first, per request",
            m,
            buckets=TPOT_BUCKETS,
            registry=r,
        ).labels(model)
        requests = Counter(
            "llmlib:requests",
            "requests by outcome (success, failed, aborted)",
            (*m, "outcome"),
            registry=r,
        )
        self.outcome = {k: requests.labels(model, k) for k in ("success", "failed", "aborted")}
        rejected = Counter(
            "llmlib:rejected_requests", "requests refused, by reason", (*m, "reason"), registry=r
        )
        self.rejected = {k: rejected.labels(model, k) for k in REJECTIONS}
        self.in_flight = Gauge(
            "llmlib:requests_in_flight", "admitted requests not yet answered", m, registry=r
        ).labels(model)
        self.generated = Counter(
            "llmlib:generation_tokens", "output tokens sent", m, registry=r
        ).labels(model)

    def render(self) -> bytes:
        return generate_latest(self.registry)
