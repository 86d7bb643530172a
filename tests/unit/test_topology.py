"""The topology probe: cpulists, NUMA nodes and GPU locality from sysfs-shaped trees,
nvidia-smi's query rows, the CPU-only answer on this machine, and the CLI."""

import json
import os
import platform
import subprocess
import sys

import pytest

from llmlib.deploy.topology import numa_nodes, parse_cpulist, parse_gpu_query, probe


def test_cpulists_parse_as_the_kernel_writes_them():
    assert parse_cpulist("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert parse_cpulist("5") == [5] and parse_cpulist("") == []
    with pytest.raises(ValueError, match="not a cpulist"):
        parse_cpulist("0-x")


def test_numa_nodes_and_gpu_locality_from_sysfs_shaped_trees(tmp_path):
    nodes = tmp_path / "node"
    for n, cpus, kb in ((0, "0-3", 1000), (1, "4-7", 2000), (10, "8", 5)):
        d = nodes / f"node{n}"
        d.mkdir(parents=True)
        (d / "cpulist").write_text(cpus + "\n")
        (d / "meminfo").write_text(f"Node {n} MemTotal:       {kb} kB\nNode {n} MemFree: 1 kB\n")
    (nodes / "possible").write_text("0-1\n")  # not a node directory
    got = numa_nodes(nodes)
    assert [x["node"] for x in got] == [0, 1, 10]  # numeric order, not text order
    assert got[1] == {"node": 1, "cpus": [4, 5, 6, 7], "mem_kb": 2000}

    pci = tmp_path / "pci"
    (pci / "0000:1b:00.0").mkdir(parents=True)
    (pci / "0000:1b:00.0" / "numa_node").write_text("1\n")
    (pci / "0000:1b:00.0" / "local_cpulist").write_text("4-7\n")
    (pci / "0000:9a:00.0").mkdir()
    (pci / "0000:9a:00.0" / "numa_node").write_text("-1\n")
    rows = (
        "0, NVIDIA H100 80GB HBM3, 00000000:1B:00.0, 81559, GPU-aaa\n"
        "1, NVIDIA H100 80GB HBM3, 00000000:9A:00.0, 81559, GPU-bbb\n"
    )
    gpus = parse_gpu_query(rows, pci)
    assert gpus[0]["numa_node"] == 1 and gpus[0]["local_cpus"] == [4, 5, 6, 7]
    assert gpus[0]["memory_mib"] == 81559 and gpus[0]["name"] == "NVIDIA H100 80GB HBM3"
    assert gpus[1]["numa_node"] is None and gpus[1]["local_cpus"] == []  # -1: not said


def test_this_machine_gets_the_cpu_only_answer_and_says_why(tmp_path):
    t = probe(nvidia_smi=str(tmp_path / "no-such-nvidia-smi"))
    assert t["affinity"] == sorted(os.sched_getaffinity(0)) and t["cpus"] >= 1
    assert t["gpus"] == [] and any("nvidia-smi" in n for n in t["notes"])
    if os.path.isdir("/sys/devices/system/node/node0"):
        cpus = sorted(c for n in t["numa_nodes"] for c in n["cpus"])
        assert set(t["affinity"]) <= set(cpus)


def test_topology_cli_writes_json_and_refuses_unknown_arguments(tmp_path):
    out = tmp_path / "t" / "topology.json"
    p = subprocess.run(
        [sys.executable, "-m", "harness", "topology", "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(out.read_text())["cpus"] >= 1
    p = subprocess.run(
        [sys.executable, "-m", "harness", "topology", "--gpus"], capture_output=True, text=True
    )
    assert p.returncode == 2 and "usage" in p.stderr


def test_the_cpu_model_comes_from_cpuinfo_or_says_what_python_knows(tmp_path):
    from llmlib.deploy.topology import cpu_model

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: X\nmodel name\t: Fast   CPU @ 3.0GHz\n\n")
    assert cpu_model(info) == "Fast CPU @ 3.0GHz"
    info.write_text("processor\t: 0\nmodel name\t:  \n")
    assert cpu_model(info) == (platform.processor() or "unknown")
    assert cpu_model(tmp_path / "missing") == (platform.processor() or "unknown")
