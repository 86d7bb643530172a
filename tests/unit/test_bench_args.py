"""`make bench` runs every measure when given none (argparse once rejected that)."""

import pytest

from harness.bench import parse_args


def test_no_measure_named_means_all():
    assert parse_args([]).what == ["overhead", "fidelity"]


def test_one_measure_and_options():
    a = parse_args(["fidelity", "--repeats=5"])
    assert a.what == ["fidelity"] and a.repeats == 5


def test_unknown_measure_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args(["speed"])
    assert "invalid choice" in capsys.readouterr().err
