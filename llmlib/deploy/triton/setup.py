"""Triton Inference Server from the ``nvidia-pytriton`` package, made runnable (``make
triton``; ../shared/RECIPES.md says how it was found to work).

The registry's ``tritonserver`` package has no server; ``nvidia-pytriton`` ships the real
``tritonserver`` binary, its libraries and the Python backend with stubs per Python
version. Its numpy must be < 2, and the Python backend's stub runs the first ``python3`` on
PATH, which needs numpy < 2 too, so both live in their own venv (``<home>/venv``), apart
from the harness's. ``prepare`` makes ``<home>/server`` (the package's server tree with the
stub for the venv's Python in ``backends/python``); ``TritonHome`` gives the command's
paths and environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from llmlib.errors import BackendError, ConfigError

PYTRITON = "nvidia-pytriton==0.7.0"
DEFAULT_HOME = Path(__file__).resolve().parents[3] / "build" / "triton"


@dataclass(frozen=True)
class TritonHome:
    root: Path

    @classmethod
    def find(cls) -> TritonHome:
        return cls(Path(os.environ.get("LLMLIB_TRITON_HOME") or DEFAULT_HOME))

    @property
    def venv_python(self) -> Path:
        return self.root / "venv" / "bin" / "python3"

    @property
    def server(self) -> Path:
        return self.root / "server"

    @property
    def binary(self) -> Path:
        return self.server / "bin" / "tritonserver"

    def site_packages(self) -> Path:
        found = sorted((self.root / "venv" / "lib").glob("python3*/site-packages"))
        if not found:
            raise BackendError(f"no venv at {self.root / 'venv'}: run make triton")
        return found[0]

    def ready(self) -> bool:
        return self.binary.is_file() and self.venv_python.is_file()

    def environment(self) -> dict[str, str]:
        """PATH with the venv first (the stub's python3), LD_LIBRARY_PATH with the
        package's libraries and the venv Python's libpython directory."""
        libdir = subprocess.run(
            [str(self.venv_python), "-c",
             "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        libs = [str(self.site_packages() / "nvidia_pytriton.libs"), libdir]
        old = os.environ.get("LD_LIBRARY_PATH")
        return {
            "PATH": f"{self.venv_python.parent}:{os.environ.get('PATH', '')}",
            "LD_LIBRARY_PATH": ":".join(libs + ([old] if old else [])),
        }


def prepare(home: TritonHome | None = None, python: str = "python3") -> TritonHome:
    """Make ``home`` runnable: its venv with nvidia-pytriton, and the server tree with the
    Python backend's stub for that venv's Python. Does nothing already done."""
    home = home or TritonHome.find()
    if home.ready():
        return home
    if not home.venv_python.is_file():
        subprocess.run([python, "-m", "venv", str(home.root / "venv")], check=True)
        pip = [str(home.venv_python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, PYTRITON], check=True)
    tree = home.site_packages() / "pytriton" / "tritonserver"
    if not (tree / "bin" / "tritonserver").is_file():
        raise BackendError(f"{PYTRITON} installed no server at {tree}")
    if home.server.exists():
        shutil.rmtree(home.server)
    shutil.copytree(tree, home.server, symlinks=True)
    version = subprocess.run(
        [str(home.venv_python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    stub = home.server / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise BackendError(f"no Python backend stub for Python {version} in {PYTRITON}")
    shutil.copy2(stub, home.server / "backends" / "python" / stub.name)
    return home


def main(argv: list[str] | None = None) -> int:
    """``python -m harness triton-setup`` (``make triton``); takes no arguments."""
    if argv:
        raise ConfigError(f"triton-setup takes no arguments (got {' '.join(argv)})")
    home = prepare()
    print(f"tritonserver ready: {home.binary}")
    return 0
