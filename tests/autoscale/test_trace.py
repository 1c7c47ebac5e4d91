"""Traces: the bundled generators are reproducible; bad CSVs are refused with one line naming the problem."""

from __future__ import annotations

import numpy as np
import pytest

from mlcost_pl.autoscale.trace import bundled_trace, load_trace, parse_trace, trace_csv, write_trace


def test_bundled_traces_are_reproducible_and_round_trip_through_csv(tmp_path):
    a, b = bundled_trace("diurnal", seed=3), bundled_trace("diurnal", seed=3)
    assert np.array_equal(a.rps, b.rps) and not np.array_equal(a.rps, bundled_trace("diurnal", seed=4).rps)
    assert a.duration_s == 86_400 and a.step_s == 60
    assert a.rps.min() < 0.25 * a.rps.max()  # a night trough
    spiky = bundled_trace("spiky")
    assert spiky.step_s == 10 and spiky.rps.max() > 2 * np.median(spiky.rps)  # bursts well above the base
    path = write_trace(a, tmp_path / "sub" / "diurnal.csv")
    back = load_trace(path)
    assert np.allclose(back.rps, a.rps, atol=1e-3) and back.step_s == 60
    assert not list(tmp_path.glob("sub/.*"))  # no temporary left behind


def test_per_second_and_compressed():
    t = parse_trace("seconds,requests_per_s\n100,1\n110,3\n120,5\n")
    assert t.seconds[0] == 0 and t.step_s == 10 and t.duration_s == 30
    assert t.per_second().tolist() == [1] * 10 + [3] * 10 + [5] * 10
    c = t.compressed(10)
    assert c.rps.tolist() == [1, 3, 5] and c.step_s == 1
    assert t.total_requests == 90
    assert t.scaled(10).rps.tolist() == [2, 6, 10]
    with pytest.raises(ValueError, match="peak_rps"):
        t.scaled(0)


@pytest.mark.parametrize(
    "text, match",
    [
        ("seconds,requests_per_s\n0,1\n60,2\n180,3\n", r"line 4: gap: seconds jumps from 60 to 180, the trace's step is 60 s"),
        ("seconds,requests_per_s\n0,1\n60,-2\n", r"line 3: negative rate -2"),
        ("seconds,requests_per_s\n0,1\n60,lots\n", r"line 3: non-numeric value"),
        ("seconds,requests_per_s\n0,1\n60,nan\n", r"line 3: non-finite"),
        ("seconds,requests_per_s\n60,1\n0,2\n", r"seconds must increase"),
        ("time,rate\n0,1\n60,2\n", r"header must be 'seconds,requests_per_s'"),
        ("seconds,requests_per_s\n0,1\n", r"at least 2 rows"),
        ("", r"empty file"),
        ("seconds,requests_per_s\n0,1,2\n60,2\n", r"expected 2 columns"),
    ],
)
def test_bad_traces_are_one_line_naming_the_problem(text, match):
    with pytest.raises(ValueError, match=match) as err:
        parse_trace(text, where="t.csv")
    assert "\n" not in str(err.value) and str(err.value).startswith("trace=t.csv")


def test_unknown_trace_names_the_bundled_ones(tmp_path):
    with pytest.raises(FileNotFoundError, match="bundled traces: diurnal, spiky"):
        load_trace(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match="not a bundled trace"):
        bundled_trace("weekly")
    assert trace_csv(parse_trace("seconds,requests_per_s\n0,1\n1,2\n")).startswith("seconds,requests_per_s\n0,1.000\n")
