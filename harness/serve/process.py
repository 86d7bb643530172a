"""``python -m harness serve`` as a child process, for measurements and tests: started on a
free port of 127.0.0.1, its URL read from the line it prints (a backend may log before it),
its stdout drained after (a chatty backend never blocks on a full pipe), stopped with SIGTERM
(then SIGKILL if it does not go within ``grace_s``)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from llmlib.config.settings import REPO_ROOT
from llmlib.errors import BackendError


class FrontProcess:
    def __init__(self, args: list[str], cpus: str = "", grace_s: float = 30.0) -> None:
        cmd = [sys.executable, "-m", "harness", "serve", "--port=0", *args]
        if cpus:  # pinned with taskset
            cmd = ["taskset", "-c", cpus, *cmd]
        self.grace_s = grace_s
        self._drain: threading.Thread | None = None
        self.err = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=self.err, text=True
        )
        assert self.proc.stdout is not None
        seen = []
        for line in iter(self.proc.stdout.readline, ""):
            seen.append(line)
            m = re.search(r"llmlib serving front: (http://127\.0\.0\.1:\d+)", line)
            if m:
                self.url = m.group(1)
                self._drain = threading.Thread(target=self.proc.stdout.read, daemon=True)
                self._drain.start()
                return
        self.err.seek(0)
        err = self.err.read().decode(errors="replace")
        self.stop()
        raise BackendError(f"the serving front did not start: {''.join(seen)[-2000:]}{err}")

    def rss_mb(self) -> float:
        """Its resident memory (VmRSS), MB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._drain is not None:
            self._drain.join(10)  # the process is gone: its stdout ends
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.err.close()
