"""``python -m harness soak``: a long Server run against serving fronts that fail under it.

Three ``python -m harness serve`` fronts on fixed loopback ports; the harness runs one Server
test over them (the endpoint core, one core each) for ``--minutes``. Meanwhile front 0 is
killed (SIGKILL) every ``--kill_every_s`` and restarted on its port ``--down_s`` later, and
front 1 is stopped (SIGSTOP) for ``--stop_s`` once, a third of the way in. Every 30 s the
test process's RSS and open file descriptors are sampled. At the end: issued, completed,
failed from requests.csv (every query accounted for?), the pool's breaker events, and RSS
and descriptors at the start and the end. BENCHMARKS.md records a run.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness.argparser import ArgParser
from llmlib.config.settings import REPO_ROOT
from llmlib.deploy.launch import free_ports


def front(port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "harness", "serve", f"--port={port}", "--engine_profile=fixed"],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=open(log, "ab"),  # noqa: SIM115
    )  # fmt: skip


def wait_listening(port: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"front on port {port} did not start")


def sample(pid: int) -> tuple[int, int]:
    """(RSS in KiB, open file descriptors) of ``pid``."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def test_child(driver: int) -> int | None:
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == driver and b"_run_one" in cmd:
                return int(d.name)
    return None


def started(out: Path) -> bool:
    """Whether LoadGen's test has begun (samples before it would measure the set-up)."""
    return any("LoadGen test started" in p.read_text() for p in out.rglob("harness.log"))


def main(argv: list[str] | None = None) -> int:
    ap = ArgParser(prog="python -m harness soak", description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--qps", type=float, default=30)
    ap.add_argument("--kill_every_s", type=float, default=240)
    ap.add_argument("--down_s", type=float, default=20)
    ap.add_argument("--stop_s", type=float, default=30)
    ap.add_argument("--out", default="build/soak")
    ap.add_argument(
        "--harness_flags", default="", help="more harness flags, space-separated (--trace_memory)"
    )
    a = ap.parse_args(argv)
    out = Path(a.out) / time.strftime("%Y.%m.%d-%H.%M.%S")
    out.mkdir(parents=True)
    ports = free_ports(3)
    fronts = [front(p, out / f"front{i}.log") for i, p in enumerate(ports)]
    for p in ports:
        wait_listening(p)
    urls = ",".join(f"http://127.0.0.1:{p}" for p in ports)
    duration_s = a.minutes * 60
    driver = subprocess.Popen(
        [sys.executable, "-m", "harness", f"--log_dir={out / 'logs'}", "--scenarios=server",
         "--core_type=openai", f"--server_urls={urls}",
         f"--server_target_qps={a.qps}", f"--min_duration={int(duration_s * 1000)}",
         "--progress=false", *a.harness_flags.split()],
        cwd=REPO_ROOT, stdout=open(out / "harness.out", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
    )  # fmt: skip
    samples: list[dict[str, Any]] = []
    events: list[str] = []
    t0 = time.monotonic()
    next_kill, next_sample, stopped_at = a.kill_every_s, 0.0, None
    stop_at = duration_s / 3
    child = None
    try:
        while driver.poll() is None:
            t = time.monotonic() - t0
            child = child or test_child(driver.pid)
            if child is not None and t >= next_sample and started(out):
                try:
                    rss, fds = sample(child)
                    samples.append({"t_s": round(t), "rss_kib": rss, "fds": fds})
                except OSError:
                    pass
                next_sample += 30
            if t >= next_kill and t < duration_s - a.down_s - 30:
                fronts[0].kill()
                fronts[0].wait()
                events.append(f"{t:.0f} s: front 0 killed (SIGKILL)")
                time.sleep(a.down_s)
                fronts[0] = front(ports[0], out / "front0.log")
                wait_listening(ports[0])
                events.append(f"{time.monotonic() - t0:.0f} s: front 0 restarted")
                next_kill += a.kill_every_s
            if stopped_at is None and t >= stop_at:
                fronts[1].send_signal(signal.SIGSTOP)
                stopped_at = t
                events.append(f"{t:.0f} s: front 1 stopped (SIGSTOP)")
            elif stopped_at is not None and stopped_at >= 0 and t >= stopped_at + a.stop_s:
                fronts[1].send_signal(signal.SIGCONT)
                events.append(f"{t:.0f} s: front 1 continued (SIGCONT)")
                stopped_at = -1
            time.sleep(0.5)
    finally:
        for f in fronts:
            f.send_signal(signal.SIGCONT)
            f.kill()
            f.wait()
    return report(out, driver.returncode, samples, events)


def report(out: Path, rc: int, samples: list[dict[str, Any]], events: list[str]) -> int:
    summaries = list((out / "logs").rglob("summary.json"))
    if not summaries:
        print(f"no summary: see {out / 'harness.out'}")
        return 1
    s = json.loads(summaries[0].read_text())
    rows = list(csv.DictReader((summaries[0].parent / "requests.csv").read_text().splitlines()))
    failed = sum(1 for r in rows if r["error"])
    result = {
        "exit_status": rc,
        "issued": len(rows),
        "completed": len(rows) - failed - sum(1 for r in rows if not r["latency_ms"]),
        "failed": failed,
        "harness": {k: s["harness"][k] for k in ("issued", "completed", "failed")},
        "validity": s["validity"],
        "core_health": s.get("core_health", []),
        "chaos": events,
        "rss_fds": samples,
        "errors": s["harness"]["errors"],
    }
    (out / "soak.json").write_text(json.dumps(result, indent=2))
    first, last = samples[0], samples[-1]
    print(f"soak: {out}")
    print(f"  issued {result['issued']}, completed {result['completed']}, failed {failed}; "
          f"accounted for: {result['completed'] + failed == result['issued']}")  # fmt: skip
    print(f"  RSS {first['rss_kib']} -> {last['rss_kib']} KiB, fds {first['fds']} -> "
          f"{last['fds']} (t {first['t_s']} -> {last['t_s']} s)")  # fmt: skip
    for e in events:
        print(f"  chaos {e}")
    for e in result["core_health"]:
        print(f"  pool {e['t_s']:.0f} s core {e['core']} {e['event']}: {e['reason'][:90]}")
    return 0
