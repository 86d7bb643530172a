import pytest

from llmlib.errors import HealthCheckError, WrongServerError
from llmlib.serving.core import LLMCore
from llmlib.serving.policies import make_policy
from llmlib.serving.pool import LLMServer
from llmlib.serving.request import LLMRequest, LLMResponse
from llmlib.serving.warmup import run_warmup, wait_until_healthy


class SlowStart(LLMCore):
    """Ready after ``ready_after`` health checks; answers synchronously."""

    name = "slow_start"

    def __init__(self, core_id, ready_after):
        super().__init__(core_id, None)
        self.checks, self.ready_after = 0, ready_after

    def _health_check_impl(self):
        self.checks += 1
        if self.checks <= self.ready_after:
            raise ConnectionError("not listening yet")

    def _enqueue_impl(self, requests):
        self._deliver([LLMResponse(r.request_id, [5, 6], True, 0, self.core_id) for r in requests])


class FakeTime:
    def __init__(self):
        self.t, self.sleeps = 0.0, []

    def sleep(self, s):
        self.sleeps.append(s)
        self.t += s

    def clock(self):
        return self.t


def test_health_checks_retry_with_exponential_backoff():
    ft = FakeTime()
    core = SlowStart(0, ready_after=4)
    wait_until_healthy(
        [core],
        timeout_s=10,
        initial_backoff_s=0.1,
        max_backoff_s=0.5,
        sleep=ft.sleep,
        clock=ft.clock,
    )
    assert core.checks == 5
    assert ft.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.5])


def test_readiness_timeout_names_the_core_and_its_last_error():
    ft = FakeTime()
    cores = [SlowStart(0, ready_after=0), SlowStart(1, ready_after=10**9)]
    with pytest.raises(
        HealthCheckError,
        match=r"core 1 \(slow_start\) not ready after 2 s.*"
        r"not listening yet",
    ):
        wait_until_healthy(cores, timeout_s=2, sleep=ft.sleep, clock=ft.clock)


def test_warmup_queries_never_reach_the_callback():
    seen = []
    cores = [SlowStart(i, 0) for i in range(2)]
    server = LLMServer(cores, make_policy("round_robin", 2))
    server.set_callback(seen.extend)
    reqs = [LLMRequest(-1 - i, i, [1], 4) for i in range(6)]
    assert run_warmup(server, reqs) == 0
    assert seen == [] and server.pending == 0 and server.issued == [0, 0]
    assert sum(c.telemetry.completed for c in cores) == 6
    server.issue([LLMRequest(1, 0, [1], 4)])
    assert [r.request_id for r in seen] == [1]


class WrongKind(SlowStart):
    """A server that answers, and is another kind than asked for."""

    def _health_check_impl(self):
        self.checks += 1
        raise WrongServerError("http://x is not llama.cpp's server")


def test_a_server_of_the_wrong_kind_is_said_at_once_not_waited_for():
    ft = FakeTime()
    core = WrongKind(0, ready_after=0)
    with pytest.raises(HealthCheckError, match=r"^core 0 \(slow_start\): http://x is not llama"):
        wait_until_healthy([core], timeout_s=60, sleep=ft.sleep, clock=ft.clock)
    assert core.checks == 1 and ft.sleeps == []
