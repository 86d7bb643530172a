"""``--search_stop_early=auto``: stop a probe once settled INVALID where nothing it asked can
outlive it (an engine in the run's process; servers that abort on disconnect and say what
they are), not against a server that would carry the stopped probe's backlog on."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness.run.search_stop import server_owners, stops_early
from llmlib.config.settings import resolve


class Models(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *a):
        pass


@pytest.fixture
def serve():
    servers = []

    def start(body: bytes) -> str:
        handler = type("H", (Models,), {"body": body})
        s = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=s.serve_forever, daemon=True).start()
        servers.append(s)
        return f"http://127.0.0.1:{s.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def models(owner):
    return json.dumps({"object": "list", "data": [{"id": "m", "owned_by": owner}]}).encode()


def cfg(**flags):
    return resolve({k: str(v) for k, v in flags.items()}, env={})


def test_servers_that_say_they_are_llama_cpp_are_stopped_early(serve):
    a, b = serve(models("llamacpp")), serve(models("llamacpp"))
    stop, why = stops_early(cfg(core_type="openai", server_urls=f"{a},{b}"), "auto")
    assert stop and "llamacpp" in why


@pytest.mark.parametrize(
    "body,owner",
    [
        (models("llmlib"), {"llmlib"}),
        (models("vllm"), {"vllm"}),
        (b"not json", set()),
        (b'{"data": []}', set()),
        (b'{"data": ["m"]}', set()),
        (b'{"data": "m"}', set()),
        (b'["m"]', set()),
    ],  # fmt: skip
)
def test_any_other_server_is_not(serve, body, owner):
    good, other = serve(models("llamacpp")), serve(body)
    assert server_owners(other) == owner
    stop, why = stops_early(cfg(core_type="openai", server_urls=f"{good},{other}"), "auto")
    assert not stop and why.startswith(f"{other} is not known to abort")
    assert "--search_stop_early=true" in why


def test_a_server_that_does_not_answer_is_not():
    from llmlib.deploy.launch import free_port

    url = f"http://127.0.0.1:{free_port()}"
    assert server_owners(url, timeout_s=2) == set()
    assert stops_early(cfg(core_type="openai", server_urls=url), "auto")[0] is False


@pytest.mark.parametrize(
    "flags,setting,want",
    [
        ({"core_type": "dummy"}, "auto", True),
        ({"core_type": "vllm"}, "auto", True),
        ({"core_type": "triton_grpc", "triton_server_urls": "127.0.0.1:1"}, "auto", False),
        (
            {"core_type": "openai", "launch_server": "llamacpp", "server_model": "m.gguf"},
            "auto",
            True,
        ),
        ({"core_type": "openai", "launch_server": "vllm", "server_model": "m"}, "auto", False),
        ({"core_type": "dummy"}, "false", False),
        ({"core_type": "openai", "server_urls": "http://127.0.0.1:1"}, "true", True),
    ],  # fmt: skip
)
def test_in_process_launched_and_explicit(flags, setting, want):
    assert stops_early(cfg(**flags), setting)[0] is want
