"""Whether ``harness search`` may stop a probe once it is settled INVALID
(``--search_stop_early=auto``).

A stopped probe's process ends, and with it every connection it held. An engine in the
run's own process dies with it. A server goes on only with what it does not abort: one that
stops a request whose connection closed starts the next probe empty; one that does not
carries the stopped probe's backlog into it, and the next probe would measure that. So auto
stops early in process, and against servers that each say, in ``/v1/models``, that they are
llama.cpp's (``owned_by: llamacpp``): its HTTP layer's ``should_stop`` cancels the task
(``tools/server/server-context.cpp``), tested against the real server
(``tests/integration/test_llamacpp.py``). vLLM's server is not on the list: its maintainers
say it aborts on disconnect, and a 2026 report (vllm-project/vllm#54947) says a v0.22 server
went on generating; ``--search_stop_early=true`` where you know yours does.
"""

from __future__ import annotations

import json
import urllib.request

from cores.openai.llamacpp import OWNER as LLAMACPP
from cores.openai.llamacpp import model_owners
from llmlib.config.settings import Config

IN_PROCESS = ("dummy", "transformers", "tiny_llama", "vllm")  # the engine dies with the run
# /v1/models' owned_by of servers that abort a request whose connection closed
ABORTING_SERVERS = (LLAMACPP,)
LAUNCHED_ABORTING = ("llamacpp",)  # --launch_server kinds of those


def server_owners(url: str, timeout_s: float = 5.0) -> set[str]:
    """``owned_by`` of the models a server's ``/v1/models`` lists (none if it does not
    answer, or answers something else); the endpoint core reads them the same way."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/v1/models", timeout=timeout_s) as r:
            return model_owners(json.loads(r.read()).get("data"))
    except (OSError, ValueError, AttributeError):
        return set()


def stops_early(cfg: Config, setting: str) -> tuple[bool, str]:
    """(stop early, why) for ``--search_stop_early=setting``, against ``cfg``'s servers."""
    if setting != "auto":
        return setting == "true", f"--search_stop_early={setting}"
    if cfg.core_type in IN_PROCESS:
        return True, f"the {cfg.core_type} core's engine ends with each run"
    if cfg.launch_server in LAUNCHED_ABORTING:
        return (
            True,
            f"the launched {cfg.launch_server} server aborts what a closed connection asked",
        )
    if cfg.core_type == "openai" and cfg.server_urls:
        owners = [server_owners(u) & set(ABORTING_SERVERS) for u in cfg.server_urls]
        if all(owners):
            return (
                True,
                f"the servers ({', '.join(sorted(set().union(*owners)))}) abort on disconnect",
            )
        other = next(u for u, o in zip(cfg.server_urls, owners, strict=True) if not o)
        return False, (f"{other} is not known to abort a request whose connection closed "
                       "(its backlog would carry into the next probe); --search_stop_early=true "
                       "if it does")  # fmt: skip
    return False, f"the {cfg.core_type} core's servers are not known to abort on disconnect"
