"""The machine's layout for placing engines and harness threads: CPUs, NUMA nodes, GPUs and
which NUMA node and CPUs each GPU is closest to.

Sources: ``os.sched_getaffinity`` and ``/sys/devices/system/node`` (CPUs and NUMA nodes),
``nvidia-smi --query-gpu`` (GPUs) and ``/sys/bus/pci/devices/<bus id>/{numa_node,
local_cpulist}`` (each GPU's locality), ``nvidia-smi topo -m`` (the link matrix, kept as
text). Anything missing (no ``nvidia-smi``, no ``/sys`` NUMA tree, a container hiding it)
leaves its part empty and says why in ``notes``: on a machine with no GPU the answer is the
CPU-only part. Standard library only, so ``python -m harness topology`` runs on a bare GPU
host too.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

SYS_NODES = Path("/sys/devices/system/node")
SYS_PCI = Path("/sys/bus/pci/devices")
GPU_QUERY = "index,name,pci.bus_id,memory.total,uuid"


def parse_cpulist(text: str) -> list[int]:
    """``"0-3,8,10-11"`` -> ``[0, 1, 2, 3, 8, 10, 11]`` (the kernel's cpulist format)."""
    out: list[int] = []
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            out += list(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            raise ValueError(f"not a cpulist: {text!r}") from None
    return out


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def numa_nodes(root: Path = SYS_NODES) -> list[dict[str, Any]]:
    """NUMA nodes with their CPUs and memory (kB), from sysfs; [] where it is not there."""
    nodes = []
    for d in sorted(root.glob("node[0-9]*"), key=lambda p: int(p.name[4:])):
        cpus = _read(d / "cpulist")
        mem = _read(d / "meminfo") or ""
        total = next((ln.split()[-2] for ln in mem.splitlines() if "MemTotal" in ln), None)
        nodes.append(
            {
                "node": int(d.name[4:]),
                "cpus": parse_cpulist(cpus) if cpus else [],
                "mem_kb": int(total) if total and total.isdigit() else None,
            }
        )
    return nodes


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (the first ``model name`` of ``cpuinfo``, else what
    ``platform.processor`` says, else "unknown"): benchmarks print it, so absolute times
    from different machines are not compared as if they were one."""
    for line in (_read(cpuinfo) or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return " ".join(value.split())
    return platform.processor() or "unknown"


def _pci_dir(bus_id: str, root: Path) -> Path:
    """nvidia-smi prints ``00000000:1B:00.0``; sysfs names it ``0000:1b:00.0``."""
    domain, _, rest = bus_id.strip().partition(":")
    return root / f"{domain[-4:]}:{rest}".lower()


def parse_gpu_query(text: str, pci_root: Path = SYS_PCI) -> list[dict[str, Any]]:
    """Rows of ``nvidia-smi --query-gpu=GPU_QUERY --format=csv,noheader,nounits``, each
    with its NUMA node and local CPUs from sysfs where present."""
    gpus = []
    for line in text.strip().splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) < 5:
            continue
        index, name, bus, mem, uuid = cells[:5]
        pci = _pci_dir(bus, pci_root)
        node_text = (_read(pci / "numa_node") or "").strip()
        node = int(node_text) if node_text.lstrip("-").isdigit() else -1
        local = _read(pci / "local_cpulist")
        gpus.append(
            {
                "index": int(index),
                "name": name,
                "pci_bus_id": bus,
                "memory_mib": int(mem) if mem.isdigit() else None,
                "uuid": uuid,
                # -1 from sysfs: the platform does not say (one node, or hidden)
                "numa_node": node if node >= 0 else None,
                "local_cpus": parse_cpulist(local) if local else [],
            }
        )
    return gpus


def _run(cmd: list[str]) -> tuple[str | None, str]:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{' '.join(cmd[:2])}: {exc}"
    if p.returncode != 0:
        return None, f"{' '.join(cmd[:2])} exited {p.returncode}: {p.stderr.strip()[:200]}"
    return p.stdout, ""


def probe(nvidia_smi: str | None = None) -> dict[str, Any]:
    """The layout of this machine (see the module docstring)."""
    notes: list[str] = []
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = list(range(os.cpu_count() or 1))
        notes.append("no sched_getaffinity: every CPU assumed usable")
    nodes = numa_nodes()
    if not nodes:
        notes.append(f"no NUMA nodes under {SYS_NODES}: one node assumed")
    smi = nvidia_smi or shutil.which("nvidia-smi")
    gpus: list[dict[str, Any]] = []
    matrix = None
    if smi is None:
        notes.append("no nvidia-smi: no GPUs (the CPU-only answer)")
    else:
        out, err = _run([smi, f"--query-gpu={GPU_QUERY}", "--format=csv,noheader,nounits"])
        if out is None:
            notes.append(err)
        else:
            gpus = parse_gpu_query(out)
            matrix, err = _run([smi, "topo", "-m"])
            if err:
                notes.append(err)
        for g in gpus:
            if g["numa_node"] is None:
                notes.append(f"GPU {g['index']}: sysfs gives no NUMA node")
    return {
        "host": platform.node(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "affinity": affinity,
        "numa_nodes": nodes,
        "gpus": gpus,
        "gpu_link_matrix": matrix,
        "notes": notes,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m harness topology [--out FILE]``: the probe as JSON."""
    args = list(sys.argv[1:] if argv is None else argv)
    out = None
    if args[:1] in (["--help"], ["-h"]):
        print("usage: python -m harness topology [--out FILE]\n\n" + (__doc__ or ""))
        return 0
    if args[:1] == ["--out"] and len(args) == 2:
        out = Path(args[1])
    elif args and args[0].startswith("--out="):
        out = Path(args[0].split("=", 1)[1])
    elif args:
        print("usage: python -m harness topology [--out FILE]", file=sys.stderr)
        return 2
    text = json.dumps(probe(), indent=1)
    if out is None:
        print(text)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        print(f"topology: {out}")
    return 0
