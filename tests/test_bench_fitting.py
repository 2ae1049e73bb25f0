"""The fit suite's synthetic sweep: sizes, the subprocess budget, and rows kept across runs."""

from __future__ import annotations

import json
from types import SimpleNamespace

from benchmarks import fitting
from benchmarks.harness import Recorder


def _options(**overrides):
    base = dict(sizes=None, n_bins=None, n_systematics=None, seed=0, quick=False)
    return SimpleNamespace(**{**base, **overrides})


def test_sizes_default_to_a_tenth_as_many_systematics():
    assert fitting.synthetic_sizes(_options(sizes=[100, 10_000])) == [(100, 10), (10_000, 1000)]
    assert fitting.synthetic_sizes(_options(sizes=[100], n_systematics=3)) == [(100, 3)]
    assert fitting.synthetic_sizes(_options(n_bins=50, n_systematics=7)) == [(50, 7)]
    assert fitting.synthetic_sizes(_options()) == []


def test_a_subprocess_over_budget_is_killed_and_reported():
    stages, reason = fitting.run_synthetic("pyhf-numpy-slsqp", 20, 2, seed=0, budget=0.2)
    assert reason is not None and reason.startswith("did not finish in 0 s")
    assert "stopped" in reason
    assert all(stage["stage"] != "first_fit" for stage in stages)


def test_rows_of_pairs_not_measured_now_are_kept(tmp_path):
    old = Recorder("fit", {"argv": ["fit"]}, tmp_path, echo=False)
    for case in ("ttbar_ljets", "synthetic_100x10"):
        for name in ("bayeshf", "pyhf-numpy-slsqp"):
            old.add_value(case=case, implementation=name, metric="fit", unit="s", value=1.0)
    old.skip(implementation="pyhf-numpy-slsqp", case="synthetic_100x10", reason="did not finish in 1 s")
    old.save()
    new = Recorder("fit", {"argv": ["fit", "--sizes", "100"]}, tmp_path, echo=False)
    new.add_value(case="synthetic_100x10", implementation="pyhf-numpy-slsqp", metric="fit", unit="s", value=2.0)
    fitting.keep_previous_rows(new, {("synthetic_100x10", "pyhf-numpy-slsqp")})
    new.save()
    data = json.loads((tmp_path / "fit.json").read_text())
    assert [(r["case"], r["implementation"], r["median"]) for r in data["rows"]] == [
        ("ttbar_ljets", "bayeshf", 1.0), ("ttbar_ljets", "pyhf-numpy-slsqp", 1.0),
        ("synthetic_100x10", "bayeshf", 1.0), ("synthetic_100x10", "pyhf-numpy-slsqp", 2.0)]
    assert data["rows"][0]["measured_in"]["command"] == "python -m benchmarks fit"
    assert "measured_in" not in data["rows"][-1]
    assert data["skips"] == []  # the old skip belonged to the pair measured again
