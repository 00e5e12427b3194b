"""Result files and their statistics (mass/results.py): the Wilson score interval of an accuracy,
and JSON results written atomically."""

import json
import math
import os
from pathlib import Path

import pytest

from mass.results import wilson_interval, write_json

Z = 1.959964
GRID = [(k, n) for n in (1, 2, 3, 5, 10, 37, 100, 500) for k in range(n + 1)]


@pytest.mark.parametrize("n", [1, 10, 20, 100, 1000])
def test_wilson_upper_bound_at_zero_successes_is_z2_over_n_plus_z2(n):
    """At k = 0 the formula reduces by hand to (0, z²/(n + z²)): e.g. 0/20 -> 0.1611 (Newcombe 1998)."""
    lo, hi = wilson_interval(0, n)
    assert lo == 0.0
    assert hi == pytest.approx(Z * Z / (n + Z * Z), rel=1e-9)
    assert wilson_interval(n, n) == pytest.approx((n / (n + Z * Z), 1.0), rel=1e-9)


@pytest.mark.parametrize("k, n, want", [
    (81, 263, (0.2553, 0.3662)),  # Newcombe (1998), Statistics in Medicine 17:857, table I
    (15, 148, (0.0624, 0.1605)),
    (1, 29, (0.0061, 0.1718)),
    (0, 20, (0.0, 0.1611)),
])
def test_wilson_matches_published_values(k, n, want):
    assert wilson_interval(k, n) == pytest.approx(want, abs=1e-4)


def test_wilson_one_of_two_by_hand():
    """k=1, n=2: p = 1/2, so the centre is 1/2 and the half width z*sqrt(1/8 + z²/16)/(1 + z²/2)."""
    half = Z * math.sqrt(1 / 8 + Z * Z / 16) / (1 + Z * Z / 2)
    assert wilson_interval(1, 2) == pytest.approx((0.5 - half, 0.5 + half), rel=1e-12)


def test_wilson_bounds_lie_in_the_unit_interval_and_contain_the_proportion():
    for k, n in GRID:
        lo, hi = wilson_interval(k, n)
        assert 0.0 <= lo <= k / n <= hi <= 1.0, (k, n)


def test_wilson_ends_are_exact_only_at_zero_and_all():
    """0 and 1 are reached exactly (not 0.99999...) at k = 0 and k = n, and never inside."""
    for k, n in GRID:
        lo, hi = wilson_interval(k, n)
        assert (lo == 0.0) == (k == 0), (k, n)
        assert (hi == 1.0) == (k == n), (k, n)


def test_wilson_is_symmetric_in_successes_and_failures():
    for k, n in GRID:
        lo, hi = wilson_interval(k, n)
        lo_rev, hi_rev = wilson_interval(n - k, n)
        assert lo == pytest.approx(1 - hi_rev, abs=1e-12) and hi == pytest.approx(1 - lo_rev, abs=1e-12), (k, n)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_wilson_narrows_as_n_grows(p):
    widths = []
    for n in (10, 100, 1000, 10000):
        lo, hi = wilson_interval(round(p * n), n)
        widths.append(hi - lo)
    assert all(a > b for a, b in zip(widths, widths[1:])), widths


def test_wilson_widens_with_z():
    lo95, hi95 = wilson_interval(30, 100)
    lo99, hi99 = wilson_interval(30, 100, z=2.575829)
    assert lo99 < lo95 < 0.3 < hi95 < hi99
    assert wilson_interval(30, 100, z=0.0) == pytest.approx((0.3, 0.3))  # no uncertainty: the proportion


def test_wilson_of_no_trials_is_zero():
    assert wilson_interval(0, 0) == (0.0, 0.0)


def test_write_json_round_trips_and_creates_parent_folders(tmp_path):
    obj = {"accuracy": 0.25, "n": 4, "ci95": [0.05, 0.7], "model": "tiny", "nested": {"a": [1, None, True]},
           "answer": "$\\frac{1}{2}$ — ½ 中"}
    path = tmp_path / "results" / "deep" / "r.json"
    write_json(obj, path)
    assert json.loads(path.read_text(encoding="utf-8")) == obj
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and "½ 中" in text  # readable, not \u-escaped


def test_write_json_replaces_an_existing_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "r.json"
    write_json({"old": list(range(1000))}, path)
    write_json({"new": 1}, path)
    assert json.loads(path.read_text()) == {"new": 1}  # replaced whole, no tail of the longer old file
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_write_json_that_fails_to_serialise_leaves_the_old_file(tmp_path):
    path = tmp_path / "r.json"
    write_json({"kept": True}, path)
    with pytest.raises(TypeError):
        write_json({"bad": object()}, path)
    assert json.loads(path.read_text()) == {"kept": True}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_write_json_interrupted_mid_write_never_shows_a_partial_file(tmp_path, monkeypatch):
    """A write that dies half way (disk full, a kill) leaves the old file whole, or none at all."""
    real_write_text = Path.write_text

    def half_then_fail(self, data, *args, **kwargs):
        real_write_text(self, data[: len(data) // 2], *args, **kwargs)
        raise OSError("disk full")

    old, fresh = tmp_path / "old.json", tmp_path / "fresh.json"
    write_json({"kept": list(range(50))}, old)
    monkeypatch.setattr(Path, "write_text", half_then_fail)
    for path in (old, fresh):
        with pytest.raises(OSError, match="disk full"):
            write_json({"new": list(range(50))}, path)
    monkeypatch.undo()
    assert json.loads(old.read_text()) == {"kept": list(range(50))}
    assert not fresh.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json"]  # and no temporary left behind


def test_write_json_temporary_is_hidden_beside_the_target(tmp_path, monkeypatch):
    """The temporary sits in the same folder (so the rename is atomic) under a name no reader of
    *.json picks up."""
    seen = []
    real_replace = Path.replace

    def spy(self, target):
        seen.append((self, Path(target)))
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", spy)
    path = tmp_path / "sub" / "r.json"
    write_json({"a": 1}, path)
    [(tmp, target)] = seen
    assert target == path and tmp.parent == path.parent
    assert tmp.name.startswith(".") and not tmp.name.endswith(".json") and str(os.getpid()) in tmp.name
