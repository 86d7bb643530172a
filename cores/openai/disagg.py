"""``trtllm_disagg``: the endpoint client against a disaggregated TensorRT-LLM deployment.

``trtllm-serve disaggregated -c disagg_config.yaml`` puts one OpenAI-compatible leader in
front of context (prefill) and generation (decode) servers. Its YAML is this core's
configuration (``--disagg_config``): ``hostname`` and ``port`` give the leader this core
talks to (unless ``--server_urls`` names it), ``context_servers.urls`` and
``generation_servers.urls`` the workers, each of which must answer ``/health`` before the
run starts (a dead worker is named, instead of every request failing later). Requests,
streaming, token ids and failures are the ``openai`` core's. One core: the leader
balances over its workers.

TensorRT-LLM does not run on this machine; the tests put llmlib's own serving front in each
role (leader, context and generation servers), which exercises this client and its config,
not a real disaggregated leader.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from cores.openai.core import EndpointCore, EndpointSettings, check_http_url
from llmlib.config.fields import Section, setting
from llmlib.config.settings import Config, read_yaml
from llmlib.errors import ConfigError, HealthCheckError
from llmlib.serving.registry import register_core


@dataclass(frozen=True)
class DisaggSettings(Section):
    group: ClassVar[str] = "trtllm_disagg"
    disagg_config: str = setting(
        "",
        "trtllm-serve disaggregated's YAML (hostname, port, context_servers, "
        "generation_servers): the trtllm_disagg core's leader and workers",
        path=True,
    )


def read_disagg_config(path: str) -> dict[str, Any]:
    """The leader URL and the worker URLs of a ``trtllm-serve disaggregated`` YAML."""
    try:
        doc = read_yaml(Path(path))
    except ConfigError as exc:
        raise ConfigError(f"--disagg_config: {exc}") from None
    out: dict[str, Any] = {}
    for role in ("context_servers", "generation_servers"):
        urls = (doc.get(role) or {}).get("urls") or []
        if not urls:
            raise ConfigError(f"--disagg_config {path}: {role}.urls is missing or empty")
        out[role] = [_http(str(u)) for u in urls]
        for u in out[role]:
            check_http_url(u, f"--disagg_config {path}: {role}.urls")
    host, port = doc.get("hostname"), doc.get("port")
    out["leader"] = _http(f"{host}:{port}") if host and port else ""
    if out["leader"]:
        check_http_url(out["leader"], f"--disagg_config {path}: hostname/port")
    return out


def _http(url: str) -> str:
    return url if url.startswith(("http://", "https://")) else f"http://{url}"


@register_core("trtllm_disagg")
class DisaggCore(EndpointCore):
    @classmethod
    def validate_config(cls, cfg: Config) -> None:
        path, ep = DisaggSettings.of(cfg).disagg_config, EndpointSettings.of(cfg)
        if not path:
            raise ConfigError(
                "core_type trtllm_disagg needs --disagg_config (the YAML given to "
                "trtllm-serve disaggregated -c)"
            )
        roles = read_disagg_config(path)
        if not roles["leader"] and not ep.server_urls:
            raise ConfigError(
                f"--disagg_config {path}: no hostname/port for the leader; "
                "give them or --server_urls"
            )
        if len(ep.server_urls) > 1:
            raise ConfigError("trtllm_disagg talks to one leader: give one URL")
        if ep.endpoint_api == "chat" and not cfg.tokenizer_path:
            raise ConfigError("--endpoint_api=chat sends text: give --tokenizer_path")

    @classmethod
    def num_cores_for_workload(cls, cfg: Config) -> int:
        cls.validate_config(cfg)
        return 1

    def __init__(self, core_id: int, cfg: Config, callback: Any = None) -> None:
        self.validate_config(cfg)
        self.roles = read_disagg_config(DisaggSettings.of(cfg).disagg_config)
        leader = EndpointSettings.of(cfg).server_urls or [self.roles["leader"]]
        super().__init__(core_id, cfg.replace(server_urls=leader), callback)

    def _health_check_impl(self) -> None:
        for role in ("context_servers", "generation_servers"):
            for url in self.roles[role]:
                try:
                    with urllib.request.urlopen(url + "/health", timeout=5) as r:
                        ok = r.status == 200
                except (urllib.error.URLError, OSError) as exc:
                    raise HealthCheckError(f"{role[:-1].replace('_', ' ')} {url}: {exc}") from exc
                if not ok:
                    raise HealthCheckError(f"{role[:-1].replace('_', ' ')} {url}: HTTP {r.status}")
        super()._health_check_impl()

    def report_notes(self) -> list[str]:
        ctx, gen = len(self.roles["context_servers"]), len(self.roles["generation_servers"])
        return [f"disaggregated: leader {self.url}, {ctx} context / {gen} generation servers"] + (
            super().report_notes()
        )
