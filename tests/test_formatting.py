"""One number format for people (window, CLI text, PDF): asdesk.core.formatting."""

from __future__ import annotations

import math

import pytest

from asdesk.core.formatting import (
    format_elapsed,
    format_percent,
    format_probability,
    join_present,
    probability_versus_threshold,
)


@pytest.mark.parametrize(("value", "text"), [
    (0.674, "67.4 %"), (0.0, "0.0 %"), (1.0, "100.0 %"), (0.05, "5.0 %"),
    (0.99996, "> 99.9 %"),  # never rounded up into certainty
    (0.00004, "< 0.1 %"),  # never rounded down to nothing
    (None, "–"), (math.nan, "–"),
])
def test_probability_is_a_percentage_with_one_decimal(value, text):
    assert format_probability(value) == text


def test_percent_decimals():
    assert format_percent(0.61234, 2) == "61.23 %" and format_percent(0.61234, 0) == "61 %"


def test_the_relation_is_always_written_and_true_of_the_numbers_shown():
    assert probability_versus_threshold(0.674, 0.608, True) == "67.4 % ≥ threshold 60.8 %"
    assert probability_versus_threshold(0.032, 0.608, False) == "3.2 % < threshold 60.8 %"
    # 60.79 % vs 60.81 %: one decimal would print "60.8 % < threshold 60.8 %"
    assert probability_versus_threshold(0.6079, 0.6081, False) == "60.79 % < threshold 60.81 %"


@pytest.mark.parametrize(("seconds", "text"), [
    (0.018, "18 ms"), (0.0004, "< 1 ms"), (0.9994, "999 ms"), (1.44, "1.4 s"), (59.9, "59.9 s"),
    (125.0, "2 min 05 s"), (None, "–"),
])
def test_elapsed_never_reads_zero_seconds(seconds, text):
    assert format_elapsed(seconds) == text


def test_join_present_leaves_out_empty_parts():
    assert join_present(["KNEE", ""]) == "KNEE"
    assert join_present(["", "CR", "DX"]) == "CR, DX"
    assert join_present([None, " ", "MR"], " · ") == "MR"
    assert join_present([]) == ""
