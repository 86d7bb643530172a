"""``WorkerClocks``: a worker's own durations beside the driver's, per answer."""

import numpy as np

from llmlib.serving.workerclocks import HEAD, WorkerClocks


def test_rows_are_durations_on_each_clock_and_their_difference_is_the_hop(tmp_path):
    c = WorkerClocks()
    # request 7 streamed: issued at 1,000 (driver), received at 50,000 (worker's clock)
    c.first(7, 50_300, now=1_500)  # first token: 300 on the worker, 500 on the driver
    c.final(7, 1_000, 51_000, 50_000, now=2_400)
    c.final(8, 1_000, 50_900, 50_100, now=2_000)  # answered in one piece: first is last
    c.first(9, 50_500, now=1_700)  # failed after its first token: no row
    c.forget(9)
    c.final(10, 0, 50_900, 50_100, now=2_000)  # issue unknown (e.g. the core failed): none
    c.final(11, 1_000, 50_900, 0, now=2_000)  # receipt unknown: none
    assert len(c) == 2
    assert c.write(tmp_path, 3) == ["worker_clocks_core3.csv"]
    text = (tmp_path / "worker_clocks_core3.csv").read_text()
    assert text.splitlines()[0] == HEAD
    rows = np.loadtxt(tmp_path / "worker_clocks_core3.csv", delimiter=",", skiprows=1,
                      dtype=np.int64)  # fmt: skip
    assert rows.tolist() == [[7, 500, 1_400, 300, 1_000], [8, 1_000, 1_000, 800, 800]]
    line = c.line()
    assert line.startswith("on the workers' clocks, over 2 answers: first token p50 ")
    assert "the hop to the driver added p50 0.00 / p99 0.00 ms to the first token" in line


def test_nothing_to_say_before_any_answer(tmp_path):
    c = WorkerClocks()
    c.first(1, 10, now=20)
    assert (len(c), c.line(), c.write(tmp_path, 0)) == (0, "", [])
    assert not list(tmp_path.iterdir())
