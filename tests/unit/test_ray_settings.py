"""``--client_backend=ray``'s checks that need no cluster (``RaySettings.check``): each a
ConfigError with one line that says what to do, whether Ray is installed or not."""

import sys

import pytest

from llmlib.deploy.ray_cluster import GCS_WAIT, init_ray
from llmlib.errors import ConfigError
from llmlib.serving.raypool import RaySettings


def test_without_ray_the_backend_names_the_extra_and_the_other_choice(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray: ImportError
    with pytest.raises(ConfigError) as e:
        RaySettings(client_backend="ray").check(2, "--workers_per_core=N")
    assert str(e.value) == (
        "--client_backend=ray needs Ray: pip install -e '.[ray]' (or --client_backend=process)"
    )
    RaySettings().check(2, "--workers_per_core=N")  # the process backend needs no Ray


def test_no_workers_and_a_resource_without_a_cluster_are_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", object())  # (installed or not: said first)
    with pytest.raises(ConfigError, match="give --workers_per_core=N"):
        RaySettings(client_backend="ray").check(0, "--workers_per_core=N")
    with pytest.raises(ConfigError, match="give --ray_address"):
        RaySettings(client_backend="ray", ray_worker_resource="clients").check(2, "x")
    with pytest.raises(ConfigError, match="not host:port"):
        RaySettings(client_backend="ray", ray_address="nohostport").check(2, "x")


class FakeRay:
    """``ray`` as init_ray sees it: ``init`` records the GCS wait it would run under."""

    def __init__(self, fail: str = "", fails: int = 0) -> None:
        self.fail, self.fails, self.gcs_wait, self.inits, self.shut = fail, fails, "", 0, 0

    def is_initialized(self) -> bool:
        return False

    def init(self, **kw) -> None:
        import os

        self.gcs_wait = os.environ.get(GCS_WAIT, "")
        self.inits += 1
        if self.inits <= self.fails:
            raise TimeoutError(self.fail)

    def shutdown(self) -> None:
        self.shut += 1


def test_ray_started_here_gives_its_gcs_time_on_a_busy_machine(monkeypatch):
    # CI once lost a run to Ray's own 30 s wait for its GCS port on a loaded 2-core machine
    monkeypatch.delenv(GCS_WAIT, raising=False)
    fake = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    init_ray("--client_backend=ray", wait_s=30)
    assert fake.gcs_wait == "120"
    monkeypatch.delenv(GCS_WAIT)
    init_ray("--client_backend=ray", wait_s=300)
    assert fake.gcs_wait == "300"
    monkeypatch.setenv(GCS_WAIT, "45")  # the operator's own setting stands
    init_ray("--client_backend=ray", wait_s=300)
    assert fake.gcs_wait == "45"


def test_ray_that_fails_to_start_is_tried_once_more_then_one_line(monkeypatch):
    why = "The current node timed out during startup. This could happen because...\nmore"
    fake = FakeRay(why, fails=1)  # a raylet that missed one of Ray's fixed waits, once
    monkeypatch.setitem(sys.modules, "ray", fake)
    assert init_ray("--client_backend=ray") is fake
    assert (fake.inits, fake.shut) == (2, 1)  # the half-started one shut down first
    fake = FakeRay(why, fails=5)
    monkeypatch.setitem(sys.modules, "ray", fake)
    with pytest.raises(ConfigError) as e:
        init_ray("--client_backend=ray")
    assert str(e.value) == (
        "Ray did not start on this machine (2 tries): The current node timed out during "
        "startup. This could happen because...; its logs: /tmp/ray/session_latest/logs"
    )
    assert (fake.inits, fake.shut) == (2, 2)
