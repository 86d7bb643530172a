"""``--client_backend=ray``'s checks that need no cluster (``RaySettings.check``): each a
ConfigError with one line that says what to do, whether Ray is installed or not."""

import sys

import pytest

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
