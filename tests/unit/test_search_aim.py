"""Where the capacity search aims its next probe (``harness.run.search_aim``)."""

import pytest

from harness.run.search_aim import aim, down, margin

LG = {"ttft_limit_ns": 2_000_000_000, "tpot_limit_ns": 200_000_000,
      "ttft_ns": {"p99": 500_000_000}, "tpot_ns": {"p99": 20_000_000}}  # fmt: skip


def test_margin_is_the_tightest_limit():
    assert margin(0.99, 0.02, LG) == pytest.approx(0.01)  # delivered: 1% of room
    slow = {**LG, "ttft_ns": {"p99": 2_200_000_000}}
    assert margin(1.0, 0.02, slow) == pytest.approx(-0.1)  # 10% past the TTFT limit
    assert margin(0.9, 0.02, {}) is None and margin(0.0, 0.02, LG) is None
    assert margin(1.0, 0.02, {"ttft_ns": {"p99": 1}}) == pytest.approx(0.02)  # no limits


def test_aim_interpolates_where_the_margin_crosses_zero():
    # held at 90 with 1.6% room, broke at 95 by 0.1%: the line crosses at ~94.7
    assert aim(90, 95, 0.016, -0.001, 0.1) == pytest.approx(90 + 5 * 16 / 17)


def test_aim_stays_a_resolution_step_inside_the_bracket():
    assert aim(90, 95, 0.5, -0.0001, 0.4) == pytest.approx(94.6)
    assert aim(90, 95, 0.0001, -0.5, 0.4) == pytest.approx(90.4)


@pytest.mark.parametrize(
    "m_lo, m_hi",
    [(None, -0.1), (0.1, None), (0.1, 0.05), (-0.01, -0.1)],  # unknown, or no zero between
)
def test_aim_falls_back_to_the_midpoint(m_lo, m_hi):
    assert aim(80, 100, m_lo, m_hi, 0.1) == 90


def test_a_bracket_of_two_steps_is_halved():
    assert aim(90, 90.8, 0.5, -0.01, 0.4) == pytest.approx(90.4)


def test_down_rounds_to_the_resolution():
    assert down(94.49, 0.4) == 94.4 and down(94.8, 0.4) == 94.8 and down(7.3, 5) == 5
