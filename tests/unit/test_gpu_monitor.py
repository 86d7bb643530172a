"""The GPU monitor: facts and samples through an NVML stand-in (this machine has no GPU;
the real NVML is exercised on the GPU machine), nothing at all where NVML is absent."""

import csv
import time
from types import SimpleNamespace

from llmlib.deploy.gpu_monitor import FIELDS, GpuMonitor


class FakeNVML:
    """pynvml's functions the monitor calls, for two GPUs whose load rises with each call."""

    NVML_CLOCK_SM = 1

    def __init__(self, fail_after=None, power=True):
        self.calls, self.fail_after, self.power, self.shut = 0, fail_after, power, False

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shut = True

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlSystemGetDriverVersion(self):
        return b"580.1"

    def nvmlDeviceGetName(self, h):
        return f"Fake H{h}"

    def nvmlDeviceGetMaxClockInfo(self, h, kind):
        return 1980

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(total=80 << 30, used=(10 + self.calls) << 20)

    def nvmlDeviceGetUtilizationRates(self, h):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("GPU is lost")
        return SimpleNamespace(gpu=min(100, 10 * self.calls), memory=5)

    def nvmlDeviceGetClockInfo(self, h, kind):
        return 1500

    def nvmlDeviceGetPowerUsage(self, h):
        if not self.power:
            raise RuntimeError("not supported")
        return 300_000


def test_facts_samples_csv_and_note(tmp_path):
    nv = FakeNVML()
    with GpuMonitor(0.01, tmp_path / "gpu.csv", nvml=nv) as mon:
        time.sleep(0.2)
    assert nv.shut
    s = mon.summary()
    assert [g["name"] for g in s["gpus"]] == ["Fake H0", "Fake H1"]
    g0 = s["gpus"][0]
    assert g0["memory_mib"] == 80 * 1024 and g0["driver"] == "580.1" and g0["samples"] >= 3
    assert g0["util_pct"]["max"] >= g0["util_pct"]["p50"] > 0 and g0["power_w"]["max"] == 300
    with (tmp_path / "gpu.csv").open() as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == FIELDS and len(rows) - 1 == len(mon.samples)
    assert "GPU 0: Fake H0, 81920 MiB, driver 580.1" in mon.note()
    assert "utilisation p50" in mon.note()


def test_a_sampling_error_stops_sampling_not_the_test(tmp_path):
    with GpuMonitor(0.01, tmp_path / "gpu.csv", nvml=FakeNVML(fail_after=4, power=False)) as mon:
        time.sleep(0.15)
    s = mon.summary()
    assert "GPU is lost" in s["error"] and "power_w" not in s["gpus"][0]
    assert "GPU sampling stopped" in mon.note()


def test_no_nvml_or_interval_zero_is_nothing(tmp_path):
    class Broken(FakeNVML):
        def nvmlInit(self):
            raise RuntimeError("NVML Shared Library Not Found")

    for mon in (
        GpuMonitor(0.01, tmp_path / "a.csv", nvml=Broken()),
        GpuMonitor(0.0, tmp_path / "b.csv", nvml=FakeNVML()),
    ):
        with mon:
            time.sleep(0.02)
        assert mon.summary() is None and mon.note() is None
    assert not (tmp_path / "a.csv").exists() and not (tmp_path / "b.csv").exists()
