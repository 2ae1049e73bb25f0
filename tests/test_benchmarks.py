"""Benchmark harness: every suite's --quick mode runs and records sane JSON; no timing asserts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import main
from benchmarks.harness import Recorder, format_seconds, summarize, time_per_call
from benchmarks.logdensity import per_evaluation
from benchmarks.nbin import Budget
from benchmarks.peers import in_jit_loop
from benchmarks.report import targets, write_report
from bayeshf.cli import main as cli_main
from conftest import data_path


def run_quick(tmp_path, suite, *extra):
    assert main([suite, "--quick", "--output", str(tmp_path), *extra]) == 0
    data = json.loads((tmp_path / "quick" / f"{suite}.json").read_text())
    assert data["suite"] == suite
    assert data["machine"]["versions"]["pyhf"] and data["machine"]["cpu_count"] >= 1
    for row in data["rows"]:
        assert row["min"] <= row["median"] <= row["max"]
        assert len(row["repeats"]) >= 1 and all(np.isfinite(row["repeats"]))
    for skip in data["skips"]:
        assert skip["reason"]
    return data


def rows(data, **match):
    return [r for r in data["rows"] if all(r.get(k) == v for k, v in match.items())]


def julia_available() -> bool:
    from bayeshf.julia import environment

    return environment.available()[0]


def test_summarize_is_median_and_interquartile_range():
    summary = summarize([4.0, 1.0, 100.0, 3.0, 2.0])
    assert summary["median"] == 3.0 and summary["min"] == 1.0 and summary["max"] == 100.0
    assert summary["iqr"] == pytest.approx(2.0)  # numpy's linear quartiles of 1..4,100 are 2 and 4
    assert summary["repeats"] == [4.0, 1.0, 100.0, 3.0, 2.0]


def test_time_per_call_counts_calls():
    calls = []
    summary = time_per_call(lambda: calls.append(1), repeats=3, min_time=0.001)
    assert len(summary["repeats"]) == 3 and summary["number"] >= 1
    assert len(calls) >= 3 * summary["number"]


def test_format_seconds_units():
    assert format_seconds(2.5e-7) == "250 ns"
    assert format_seconds(3.2e-5) == "32 us"
    assert format_seconds(0.0123) == "12.3 ms"
    assert format_seconds(4.0) == "4 s"


def test_targets_compare_medians():
    index = {
        ("ttbar_ljets", "bayeshf", "value_and_grad"): {"median": 1e-4},
        ("ttbar_ljets", "pyhf-jax", "value_and_grad"): {"median": 6e-4},
        ("ttbar_ljets", "bayeshf", "value_and_grad_in_jit"): {"median": 1e-5},
        ("ttbar_ljets", "pyhf-jax", "value_and_grad_in_jit"): {"median": 4e-5},
        ("ttbar_ljets", "nextstat", "value_and_grad"): {"median": 0.5e-4},
        ("ttbar_ljets", "bayeshf", "first_call_value_and_grad"): {"median": 2.0},
        ("ttbar_ljets", "jax-call-floor", "value_and_grad"): {"median": 2e-4},
        ("ttbar_ljets", "pyhf-jax-alone", "value_and_grad"): {"median": 4.5e-4},
    }
    text = "\n".join(targets(index))
    assert "per call 6.0x faster than pyhf's jitted jax backend in bayeshf's process (target >= 5x: met)" in text
    assert ("per call 4.5x faster than pyhf's jitted jax backend in its own process, as its users run it "
            "(target >= 5x: NOT met)") in text
    assert "in jit 4.0x faster than pyhf's jitted jax backend in bayeshf's process (target >= 5x: NOT met)" in text
    assert "= 0.50 (target: ahead of NextStat, > 1: NOT met)" in text
    assert "no JAX implementation can be more than 3.0x faster than pyhf-jax in bayeshf's process per call" in text
    assert "(target < 1 s: NOT met)" in text


def test_harness_hands_timing_to_objects_that_time_themselves():
    from benchmarks.harness import calibrate, time_interleaved, timing_loop

    class Elsewhere:
        def __init__(self):
            self.asked = []

        def __call__(self):  # a call across processes: must not be what the harness loops over
            raise AssertionError("called in a loop")

        def calibrate(self, min_time):
            self.asked.append(("calibrate", min_time))
            return 7

        def timing_loop(self, number):
            self.asked.append(("loop", number))
            return 1e-6

    remote = Elsewhere()
    assert calibrate(remote, 0.05) == 7 and timing_loop(remote, 3) == 1e-6
    summary = time_interleaved({"remote": remote, "local": lambda: None}, repeats=2, min_time=0.001)
    assert summary["remote"]["median"] == 1e-6 and summary["remote"]["number"] == 7
    assert remote.asked[2:] == [("calibrate", 0.001), ("loop", 7), ("loop", 7)]


def test_alone_runner_times_in_a_child_with_jax_defaults():
    from benchmarks.harness import calibrate, timing_loop
    from benchmarks.isolated import ChildFailed, alone
    from benchmarks.peers import reference_point

    spec = json.loads(data_path("thesis/2_bin_corr.json").read_text())
    names, point = reference_point(spec, seed=0)
    prepared = alone("pyhf-jax")(spec, names, point)  # the child refuses to prepare without JAX's defaults
    try:
        child = prepared.value_and_grad.child
        assert prepared.name == "pyhf-jax-alone" and prepared.setup["load"] > 0
        assert np.isfinite(prepared.logpdf) and prepared.evaluations >= 10
        number = calibrate(prepared.value_and_grad, 0.01)
        assert number >= 1 and 0 < timing_loop(prepared.value_and_grad, number) < 1.0
        with pytest.raises(ChildFailed, match="unknown request") as failure:
            child.request(op="nonsense")
        assert failure.value.implementation == "pyhf-jax-alone"
    finally:
        prepared.close()
    assert child.process.poll() is not None  # stopped
    with pytest.raises(ChildFailed, match="exited"):
        child.request(op="call", metric="value")
    with pytest.raises(ValueError, match="own"):
        alone("pyhf-jax-alone")


def test_a_child_failing_while_timed_is_skipped_and_the_others_go_on(tmp_path):
    from benchmarks import logdensity
    from benchmarks.isolated import alone
    from benchmarks.peers import LOGDENSITY_IMPLEMENTATIONS

    spec = json.loads(data_path("thesis/2_bin_corr.json").read_text())
    children = []

    def dying(spec, names, point):  # the child dies after it is prepared, before it is timed
        prepared = alone("jax-call-floor")(spec, names, point)
        prepared.value.child.process.kill()
        children.append(prepared.value.child)
        return prepared

    recorder = Recorder("logdensity", {}, None, echo=False)
    implementations = {"bayeshf": LOGDENSITY_IMPLEMENTATIONS["bayeshf"], "dying": dying}
    original = dict(LOGDENSITY_IMPLEMENTATIONS)
    LOGDENSITY_IMPLEMENTATIONS.update(implementations)
    try:
        logdensity.measure_case("thesis_2_bin_corr", spec, recorder, implementations=list(implementations),
                                repeats=1, min_time=0.001, seed=0)
    finally:
        LOGDENSITY_IMPLEMENTATIONS.clear()
        LOGDENSITY_IMPLEMENTATIONS.update(original)
    timed = {(r["implementation"], r["metric"]) for r in recorder.rows if r["metric"] in logdensity.METRICS}
    assert {("bayeshf", m) for m in logdensity.METRICS} <= timed
    assert not any(name == "dying" for name, _ in timed)
    reasons = [s["reason"] for s in recorder.skips if s["implementation"] == "dying"]
    assert reasons and "exited" in reasons[0]
    assert children[0].process.poll() is not None


def test_in_jit_loop_chains_every_evaluation():
    import jax.numpy as jnp

    calls = []

    def fn(p):
        calls.append(1)  # traced once: the loop body, not a Python loop
        return jnp.sum(p * p), 2 * p

    x = jnp.asarray([0.5, -1.0])
    total = float(in_jit_loop(fn, 5)(x))
    carry = 0.0
    for _ in range(5):  # the same chain in numpy: each point moves by 1e-12 tanh(carry)
        point = np.asarray([0.5, -1.0]) + 1e-12 * np.tanh(carry)
        carry += np.sum(point * point) + np.sum(2 * point)
    assert total == pytest.approx(carry, rel=1e-12)
    assert len(calls) == 1


def test_per_evaluation_scales_every_statistic():
    summary = dict(summarize([2.0, 4.0, 6.0]), number=3)
    scaled = per_evaluation(summary, 100)
    assert scaled["median"] == pytest.approx(0.04) and scaled["iqr"] == pytest.approx(summary["iqr"] / 100)
    assert scaled["repeats"] == pytest.approx([0.02, 0.04, 0.06]) and scaled["evaluations"] == 100
    assert scaled["number"] == 3


def test_budget_extrapolates_and_skips_larger_sizes():
    recorder = Recorder("nbin", {}, None, echo=False)
    budget = Budget({"fit": 60.0})
    assert budget.allowed("fit", ["slow", "fast"], recorder, "nbin_10", 10) == ["slow", "fast"]
    budget.record("fit", "slow", 10, 1.0)
    budget.record("fit", "slow", 100, 25.0)  # slope log(25)/log(10) = 1.4
    budget.record("fit", "fast", 100, 0.01)
    assert budget.predict("fit", "slow", 200) == pytest.approx(25.0 * 2 ** np.log10(25.0))
    assert budget.predict("fit", "fast", 1000) == pytest.approx(0.1)  # one size seen: linear
    assert budget.allowed("fit", ["slow", "fast"], recorder, "nbin_200", 200) == ["fast"]
    assert budget.allowed("fit", ["slow"], recorder, "nbin_500", 500) == []  # skipped from then on
    reasons = [s["reason"] for s in recorder.skips]
    assert reasons == [reasons[0]] * 2 and "not run from n=200" in reasons[0] and "budget 60 s" in reasons[0]
    assert {s["suite"] for s in recorder.skips} == {"fit"}


def test_recorder_carries_over_the_parts_not_rerun(tmp_path):
    first = Recorder("nbin", {"argv": ["nbin", "--parts", "logdensity,fit"]}, tmp_path, echo=False)
    first.parts = ["logdensity", "fit"]
    summary = summarize([1.0])
    first.add(case="nbin_1", implementation="a", metric="value", unit="s", summary=summary, suite="logdensity")
    first.add(case="nbin_1", implementation="a", metric="fit", unit="s", summary=summary, suite="fit")
    first.skip(implementation="b", reason="slow", case="nbin_1", suite="fit")
    first.save()
    second = Recorder("nbin", {"argv": ["nbin", "--parts", "fit"]}, tmp_path, echo=False)
    second.parts = ["fit"]
    second.carry_over(second.previous(), ["logdensity", "sampling"])
    second.add(case="nbin_2", implementation="a", metric="fit", unit="s", summary=summary, suite="fit")
    second.save()
    data = json.loads((tmp_path / "nbin.json").read_text())
    assert [(r["suite"], r["case"]) for r in data["rows"]] == [("logdensity", "nbin_1"), ("fit", "nbin_2")]
    assert data["skips"] == []  # the old fit skip went with the old fit rows
    assert set(data["parts"]) == {"logdensity", "fit"}
    assert data["parts"]["logdensity"]["command"].endswith("--parts logdensity,fit")
    assert data["parts"]["fit"]["command"].endswith("--parts fit")


def test_quick_logdensity_implementations_agree(tmp_path):
    data = run_quick(tmp_path, "logdensity", "--cases", "thesis_2_bin_corr")
    values = {r["implementation"]: r["logpdf"] for r in rows(data, metric="value")
              if r["implementation"] != "jax-call-floor"}  # not a log-density
    assert {"bayeshf", "pyhf-jax", "pyhf-numpy", "pyhf-jax-alone"} <= set(values)
    for name, value in values.items():  # same point (matched by parameter name) -> same log-density
        assert value == pytest.approx(values["pyhf-numpy"], rel=1e-9), name
    assert rows(data, implementation="bayeshf", metric="hvp")
    assert any("no gradient" in s["reason"] for s in data["skips"] if s["implementation"] == "pyhf-numpy")
    in_jit = {r["implementation"]: r for r in rows(data, metric="value_and_grad_in_jit")}
    assert {"bayeshf", "pyhf-jax", "pyhf-jax-alone"} <= set(in_jit) and "nextstat" not in in_jit
    assert rows(data, implementation="jax-call-floor", metric="value_and_grad")
    for row in in_jit.values():  # per evaluation: a call of the loop ran `evaluations` of them
        assert 10 <= row["evaluations"] <= 1000 and row["min"] <= row["median"] <= row["max"]


def test_quick_fit_reaches_the_same_minimum(tmp_path):
    data = run_quick(tmp_path, "fit", "--cases", "thesis_2_bin_corr",
                     "--impl", "bayeshf,pyhf-numpy-minuit,nextstat")
    reached = {r["implementation"]: r["twice_nll"] for r in rows(data, metric="fit")}
    assert "bayeshf" in reached and "pyhf-numpy-minuit" in reached
    for name, value in reached.items():
        assert value == pytest.approx(reached["pyhf-numpy-minuit"], abs=1e-4), name


def test_quick_sampling_records_ess_and_skips_julia(tmp_path):
    data = run_quick(tmp_path, "sampling", "--steps", "100")
    assert rows(data, implementation="bayeshf", metric="ess_per_s", sampler="mh")
    for row in rows(data, metric="min_ess_bulk"):
        assert 0 < row["median"] <= 2 * 100 * 2  # never above a few times chains x draws (antithetic at most)
    assert {r["implementation"] for r in rows(data, metric="published")} == {
        "Julia+LiteHF (thesis)", "Python+BAT (thesis)"}
    if not julia_available():
        julia = [s for s in data["skips"] if s["implementation"].startswith("bat-")]
        assert julia and all(s["reason"] == "not run: Julia not found" for s in julia)


def test_quick_nbin_and_large_and_report(tmp_path):
    nbin = run_quick(tmp_path, "nbin", "--sizes", "2", "--impl", "bayeshf,nextstat")
    assert {r["n_bins"] for r in nbin["rows"]} == {2}
    assert {r["suite"] for r in nbin["rows"]} == {"logdensity", "fit"}
    assert set(nbin["parts"]) == {"logdensity", "fit"}
    # (bayeshf: NextStat is a bench extra, not installed by the test extras)
    refit = run_quick(tmp_path, "nbin", "--sizes", "3", "--impl", "bayeshf", "--parts", "fit")
    assert {(r["suite"], r["n_bins"]) for r in refit["rows"]} == {("logdensity", 2), ("fit", 3)}
    large = run_quick(tmp_path, "large", "--bins", "40", "--systematics", "3")
    model_mb = rows(large, metric="model")[0]["median"]
    arrays_mb = rows(large, metric="arrays")[0]["median"]
    assert 0.5 * arrays_mb < model_mb < 20 * arrays_mb
    fit = rows(large, metric="fit")
    assert fit and np.isfinite(fit[0]["twice_nll"])
    docs = write_report(tmp_path / "quick", docs=tmp_path / "benchmarks.md", plots=tmp_path / "plots")
    text = docs.read_text()
    assert "## n-bin sweep" in text and "## Large synthetic model" in text
    assert "python -m benchmarks nbin --quick" in text


def test_cli_bad_case_is_one_sentence(capsys):
    assert cli_main(["bench", "logdensity", "--cases", "no_such_case", "--no-save"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("bayeshf bench: error: unknown benchmark case 'no_such_case'")


def test_cli_without_the_repository_says_how_to_get_it(monkeypatch, capsys):
    import bayeshf.cli.bench as bench_cli

    monkeypatch.setattr(bench_cli, "_benchmarks", lambda: None)
    assert cli_main(["bench", "--quick", "logdensity"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bayeshf bench: error: the benchmarks are a tool of the bayeshf repository")


def test_benchmarks_are_not_shipped_and_not_imported_by_the_library():
    import subprocess
    import sys
    import tomllib
    from pathlib import Path

    from setuptools import find_packages

    root = Path(__file__).resolve().parents[1]
    include = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    shipped = find_packages(str(root), include=include)
    assert "bayeshf" in shipped and "bayeshf.cli" in shipped
    assert not [name for name in shipped if name.split(".")[0] != "bayeshf" or name == "bayeshf.bench"]
    code = "import sys, bayeshf, bayeshf.cli; print(sorted(m for m in sys.modules if m.startswith('benchmarks')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root / "tests", check=True)
    assert out.stdout.strip() == "[]"


def test_coldstart_runs_commands_and_reports_against_the_floor(tmp_path):
    import sys

    from benchmarks.coldstart import report_section, run_command

    bare = run_command([sys.executable, "-c", "pass"])
    assert bare["wall"] > 0 and bare["cpu"] >= 0 and "hits" not in bare
    with pytest.raises(RuntimeError, match="exited with 3"):
        run_command([sys.executable, "-c", "raise SystemExit(3)"])
    assert run_command([sys.executable, "-c", "raise SystemExit(2)"], exit_code=2)["wall"] > 0
    inspected = run_command(["bayeshf", "inspect", str(data_path("thesis/2_bin_corr.json"))], cache=tmp_path)
    assert inspected["hits"] >= 0 and inspected["misses"] >= 0 and inspected["loaded"] >= 0
    # --baseline: the bayeshf commands again, run from another source tree (first on the path)
    from benchmarks import Options
    from benchmarks.coldstart import commands

    plain = commands(Options(quick=True), tmp_path)
    both = commands(Options(quick=True, baseline=str(tmp_path)), tmp_path)
    assert both[:len(plain)] == plain
    assert [(case, name) for case, name, _, _ in both[len(plain):]] == [
        ("fit ttbar_ljets", "baseline (first)"), ("fit ttbar_ljets", "baseline (second)")]
    (tmp_path / "only_in_the_baseline.py").write_text("")
    run_command([sys.executable, "-c", "import only_in_the_baseline"], source=str(tmp_path))
    with pytest.raises(RuntimeError, match="exited with 1"):
        run_command([sys.executable, "-c", "import only_in_the_baseline"])

    def row(case, name, metric, median, **extra):
        return {"case": case, "implementation": name, "metric": metric, "median": median, **extra}

    data = {"rows": [row("jax op", "python+jax", "wall", 1.0), row("jax op", "python+jax", "cpu", 0.9),
                     row("fit x", "bayeshf (second)", "wall", 1.5, cache_hits=[3, 4, 5], cache_misses=[0, 0, 1],
                         programs_loaded=[3, 3, 2], programs_stored=[0, 1, 0]),
                     row("fit x", "bayeshf (second)", "cpu", 1.2, cache_hits=[3, 4, 5], cache_misses=[0, 0, 1])]}
    text = "\n".join(report_section(data, "`cmd`", "machine"))
    assert "## As a user waits for it" in text
    assert "| fit x | bayeshf (second) | 1.50 s | 1.20 s | +0.50 s | +0.30 s | 4 / 0 | 3 / 0 |" in text
    assert "| jax op | python+jax | 1.00 s | 0.90 s | +0.00 s | +0.00 s | – | – |" in text
