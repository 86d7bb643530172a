"""`make bench`: its arguments, and the in-process path measure."""

import pytest

from harness.bench.bench import parse_args
from llmlib.errors import ConfigError


def test_no_measure_named_means_all():
    assert parse_args([]).what == ["overhead", "fidelity", "path"]


def test_one_measure_and_options():
    a = parse_args(["fidelity", "--repeats=5"])
    assert a.what == ["fidelity"] and a.repeats == 5


def test_unknown_measure_is_refused():
    with pytest.raises(ConfigError, match="invalid choice: 'speed'.*harness bench --help"):
        parse_args(["speed"])


def test_path_cost_counts_opcodes_of_a_completed_path():
    from harness.bench.pathcost import opcodes_per_query, us_per_query

    for scen in ("offline", "server"):
        ops, top = opcodes_per_query(scen, n=64)
        assert ops > 20 and any("_deliver" in k for k in top)
        assert us_per_query(scen, 64, rounds=1) > 0  # raises if a query went missing
