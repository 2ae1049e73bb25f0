"""The Julia bridge (bayeshf.julia): everything testable without Julia, and the Julia runs where it exists.

Oracles: closed-form densities and numerical integration for the prior
expressions; model.logpdf / model.log_constraint (pyhf-equal core) for the
term bookkeeping; finite differences and pyhf for the callback; an explicit
step-by-step loop for the expansion of BAT's weighted samples.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import textwrap
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate

import bayeshf
from bayeshf.errors import BayeshfError
from bayeshf.julia import environment
from bayeshf.julia.bench import RUNNERS, run, status
from bayeshf.julia.callback import callback_adapter, pyhf_callback_adapter
from bayeshf.julia.expressions import julia_expression, prior_expressions, read_expression
from bayeshf.julia.litehf import POSTERIOR_TERMS, check_litehf_support, litehf_names, litehf_spec
from bayeshf.julia.results import BATSamples, expand_chains, to_inference_data
from bayeshf.julia.sampling import sample, validate_arguments
from bayeshf.priors import PriorEntry, PriorSet, build_priors

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
JULIA_PROJECT = ROOT / "bayeshf" / "julia_project"
JULIA_OK, JULIA_REASON = environment.available()
needs_julia = pytest.mark.skipif(not JULIA_OK, reason=JULIA_REASON)

#: a small workspace with every constrained modifier kind, a pooled staterror and a masked shapesys bin
ALL_KINDS = {
    "channels": [
        {"name": "SR", "samples": [
            {"name": "signal", "data": [5.0, 8.0, 3.0], "modifiers": [
                {"name": "mu", "type": "normfactor", "data": None},
                {"name": "lumi", "type": "lumi", "data": None},
                {"name": "stat_SR", "type": "staterror", "data": [1.0, 1.5, 0.8]}]},
            {"name": "background", "data": [50.0, 40.0, 20.0], "modifiers": [
                {"name": "norm_bkg", "type": "normsys", "data": {"hi": 1.1, "lo": 0.85}},
                {"name": "shape_bkg", "type": "histosys",
                 "data": {"hi_data": [53.0, 41.0, 22.0], "lo_data": [48.0, 38.5, 19.0]}},
                {"name": "stat_SR", "type": "staterror", "data": [4.0, 3.0, 2.5]},
                {"name": "lumi", "type": "lumi", "data": None},
                {"name": "uncorr_bkg", "type": "shapesys", "data": [5.0, 0.0, 4.0]}]},
        ]},
    ],
    "observations": [{"name": "SR", "data": [57.0, 52.0, 21.0]}],
    "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": [
        {"name": "lumi", "auxdata": [1.0], "sigmas": [0.05], "bounds": [[0.5, 1.5]], "inits": [1.0]}]}}],
    "version": "1.0.0",
}


@pytest.fixture(scope="module")
def all_kinds():
    return bayeshf.load(ALL_KINDS)


@pytest.fixture()
def no_julia(monkeypatch, tmp_path):
    """An environment in which no Julia can be found, whatever the machine has."""
    for name in ("PYTHON_JULIACALL_EXE", "PYTHON_JULIACALL_BINDIR", "PYTHON_JULIAPKG_EXE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    monkeypatch.setattr(environment, "_juliapkg_candidates", lambda: [])
    monkeypatch.setattr(environment, "_BRIDGE", None)


def _fake_julia(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    exe = directory / "julia"
    exe.write_text("#!/bin/sh\necho 'julia version 1.11.0'\n")
    exe.chmod(0o755)
    return exe


# ----------------------------------------------------------------------------- finding Julia


def test_missing_julia_is_reported_in_one_sentence(no_julia):
    ok, reason = environment.available()
    assert not ok and reason == environment.JULIA_NOT_FOUND
    assert "\n" not in reason and reason.endswith(".") and reason.count(". ") == 0
    for hint in ("Julia was not found", "PYTHON_JULIAPKG_EXE", "PYTHON_JULIACALL_EXE", "PATH", "setup --download"):
        assert hint in reason
    with pytest.raises(BayeshfError) as raised:
        environment.load_bridge()
    assert str(raised.value) == environment.JULIA_NOT_FOUND


@pytest.mark.parametrize("how", ["PYTHON_JULIAPKG_EXE", "PYTHON_JULIACALL_EXE", "PYTHON_JULIACALL_BINDIR", "PATH"])
def test_find_julia_honours_every_override(no_julia, monkeypatch, tmp_path, how):
    exe = _fake_julia(tmp_path / "bin")
    value = str(exe.parent) if how in ("PYTHON_JULIACALL_BINDIR", "PATH") else str(exe)
    monkeypatch.setenv(how, value)
    assert environment.find_julia() == str(exe)
    assert environment.available() == (True, str(exe))


def test_julia_without_installed_packages_is_not_started(no_julia, monkeypatch, tmp_path):
    """Julia present but juliapkg never resolved: one sentence pointing to `bayeshf julia setup`, no install."""
    import juliapkg

    calls = []
    monkeypatch.setattr(juliapkg, "resolve", lambda **kwargs: calls.append(kwargs) or False)
    monkeypatch.setenv("PYTHON_JULIAPKG_EXE", str(_fake_julia(tmp_path / "bin")))
    with pytest.raises(BayeshfError, match="bayeshf julia setup") as raised:
        environment.load_bridge()
    assert calls == [{"dry_run": True}] and "\n" not in str(raised.value)
    assert "juliacall" not in sys.modules


def test_a_non_executable_file_is_not_julia(no_julia, monkeypatch, tmp_path):
    fake = tmp_path / "julia"
    fake.write_text("not a program")
    monkeypatch.setenv("PYTHON_JULIAPKG_EXE", str(fake))
    assert environment.find_julia() is None


def test_sample_fails_at_once_without_importing_juliacall_or_writing(tmp_path):
    """A fresh interpreter without Julia: BayeshfError with the sentence, juliacall never imported, no file written."""
    script = textwrap.dedent(f"""
        import os, sys
        from bayeshf.julia import environment
        environment._juliapkg_candidates = lambda: []
        import bayeshf.julia
        from bayeshf.errors import BayeshfError
        try:
            bayeshf.julia.sample({str(DATA / "thesis" / "2_bin_corr.json")!r}, likelihood="jax", sampler="hmc")
        except BayeshfError as error:
            print("ERROR", error)
        print("JULIACALL", "juliacall" in sys.modules)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON_JULIA",))}
    env["PATH"] = str(Path(sys.executable).parent)  # the venv's bin: python, no julia
    work = tmp_path / "cwd"
    work.mkdir()
    out = subprocess.run([sys.executable, "-c", script], cwd=work, env=env, capture_output=True, text=True,
                         timeout=120)
    assert f"ERROR {environment.JULIA_NOT_FOUND}" in out.stdout, out.stderr
    assert "JULIACALL False" in out.stdout
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("kwargs, word", [
    ({"likelihood": "pyhf"}, "likelihood"), ({"sampler": "gibbs"}, "sampler"), ({"chains": 0}, "chains"),
    ({"chains": 2.5}, "chains"), ({"steps": 0}, "steps"), ({"steps": True}, "steps"), ({"seed": -1}, "seed"),
    ({"seed": 2**64}, "seed"),
])
def test_arguments_are_checked_before_julia(no_julia, kwargs, word):
    with pytest.raises(BayeshfError) as raised:
        sample(DATA / "thesis" / "2_bin_corr.json", **kwargs)
    assert word in str(raised.value) and "Julia was not found" not in str(raised.value)
    ok = dict(likelihood="jax", sampler="hmc", chains=2, steps=10, seed=3)
    assert validate_arguments(**ok) == ("hmc", 2, 10, 3)
    assert validate_arguments(**dict(ok, sampler="nuts"))[0] == "hmc"


def test_cli_setup_prints_the_sentence_and_exits_2(no_julia, capsys):
    from bayeshf.cli import main

    assert main(["julia", "setup"]) == 2
    assert environment.JULIA_NOT_FOUND in capsys.readouterr().err
    assert main(["julia", "status"]) == 1


def test_cli_sample_backend_bat_fails_cleanly(no_julia, capsys, tmp_path):
    from bayeshf.cli import main

    out = tmp_path / "out"
    assert main(["sample", str(DATA / "thesis" / "2_bin_corr.json"), "--backend", "bat", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"bayeshf sample: error: {environment.JULIA_NOT_FOUND}"
    assert not out.exists()


def test_cli_setup_reports_what_juliapkg_installed(no_julia, monkeypatch, tmp_path, capsys):
    """`bayeshf julia setup` with Julia present: resolves through juliapkg, prints the manifest versions, loads."""
    import juliapkg

    from bayeshf.cli import main

    project = tmp_path / "julia_env"
    project.mkdir()
    (project / "Manifest.toml").write_text('[[deps.BAT]]\nversion = "4.3.1"\n[[deps.LiteHF]]\nversion = "0.1.1"\n'
                                           '[[deps.PythonCall]]\nversion = "0.9.37"\n')
    monkeypatch.setenv("PYTHON_JULIAPKG_EXE", str(_fake_julia(tmp_path / "bin")))
    resolved, loaded = [], []
    monkeypatch.setattr(juliapkg, "resolve", lambda **kwargs: resolved.append(kwargs) or True)
    monkeypatch.setattr(juliapkg, "executable", lambda: "/opt/julia/bin/julia")
    monkeypatch.setattr(juliapkg, "project", lambda: str(project))
    monkeypatch.setattr(environment, "load_bridge", lambda: loaded.append(True))
    assert main(["julia", "setup"]) == 0
    out = capsys.readouterr().out
    assert "Julia: /opt/julia/bin/julia" in out and "  BAT 4.3.1" in out and "  LiteHF 0.1.1" in out
    assert "  AdvancedHMC (not in the manifest)" in out and "PythonCall 0.9.37" in out
    assert resolved == [{}] and loaded == [True]


def test_installed_versions_reads_a_manifest(tmp_path):
    from bayeshf.cli.julia import installed_versions

    manifest = tmp_path / "Manifest.toml"
    manifest.write_text('manifest_format = "2.0"\n[[deps.BAT]]\nuuid = "c0cd4b16-88b7-57fa-983b-ab80aecada7e"\n'
                        'version = "4.3.1"\n[[deps.LiteHF]]\nversion = "0.1.1"\n')
    assert installed_versions(manifest, ["BAT", "LiteHF", "AdvancedHMC"]) == {"BAT": "4.3.1", "LiteHF": "0.1.1"}
    assert installed_versions(tmp_path / "absent.toml", ["BAT"]) == {}


def test_benchmark_runners_report_not_run(no_julia):
    for runner in RUNNERS:
        assert status(runner).startswith("not run: Julia not found")
        result = run(runner, ALL_KINDS, sampler="nuts", steps=100)
        assert result.status.startswith("not run: Julia not found") and result.draws is None
    with pytest.raises(BayeshfError):
        status("bat-stan")


# ----------------------------------------------------------------------------- prior expressions


def _entry(family, params, lower=-math.inf, upper=math.inf, name="p"):
    return PriorEntry(name, family, params, lower, upper)


def _normal_logpdf(x, mu, sigma):
    return -0.5 * ((x - mu) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)


def _normal_cdf(x, mu, sigma):
    return 0.5 * (1 + math.erf((x - mu) / (sigma * math.sqrt(2))))


def test_reader_uses_distributions_jl_parameterisation():
    """Closed forms (math module only): Gamma takes a scale, truncated renormalises, LogNormal is in log x."""
    gamma = read_expression("Gamma(3.0, 1 / 2.0)")  # shape 3, scale 1/2 == rate 2
    for x in (0.1, 1.0, 2.5):
        expected = 3.0 * math.log(2.0) - math.lgamma(3.0) + 2.0 * math.log(x) - 2.0 * x
        assert gamma.logpdf(x) == pytest.approx(expected, rel=1e-12)
    trunc = read_expression("truncated(Normal(1.0, 2.0), -1.0, 4.0)")
    mass = _normal_cdf(4.0, 1.0, 2.0) - _normal_cdf(-1.0, 1.0, 2.0)
    assert trunc.logpdf(0.3) == pytest.approx(_normal_logpdf(0.3, 1.0, 2.0) - math.log(mass), rel=1e-12)
    assert trunc.logpdf(4.5) == -math.inf and trunc.logpdf(-1.5) == -math.inf
    lognormal = read_expression("LogNormal(0.5, 0.3)")
    x = 2.0
    assert lognormal.logpdf(x) == pytest.approx(_normal_logpdf(math.log(x), 0.5, 0.3) - math.log(x), rel=1e-12)
    assert read_expression("Uniform(-2.0, 3.0)").logpdf(0.0) == pytest.approx(-math.log(5.0))
    assert read_expression("Cauchy(1.0, 2.0)").logpdf(3.0) == pytest.approx(-math.log(math.pi * 2.0 * 2.0))
    assert read_expression("Dirac(1.5)").logpdf(1.5) == 0.0


@pytest.mark.parametrize("expression", [
    "truncated(Normal(0.0, 1.0), -5.0, 5.0)", "truncated(Gamma(26.0, 1 / 25.0), 1e-10, 10.0)",
    "truncated(Normal(0.0, 0.7), 0.0, Inf)", "truncated(LogNormal(0.0, 0.5), 0.2, 3.0)",
    "truncated(Cauchy(0.0, 1.0), -3.0, 10.0)",
])
def test_truncated_expressions_integrate_to_one(expression):
    d = read_expression(expression)
    hi = d.upper if math.isfinite(d.upper) else d.lower + 50.0
    total, error = integrate.quad(lambda x: math.exp(d.logpdf(x)), d.lower, hi, limit=200, points=[0.0, 1.0])
    assert total == pytest.approx(1.0, abs=1e-7 + 10 * error)


@pytest.mark.parametrize("family, params, lower, upper", [
    ("normal", {"mu": 0.3, "sigma": 1.7}, -math.inf, math.inf),
    ("normal", {"mu": 1.0, "sigma": 0.1}, 1e-10, 10.0),
    ("lognormal", {"mu": -0.2, "sigma": 0.4}, 0.0, math.inf),
    ("lognormal", {"mu": 0.1, "sigma": 0.4}, 0.5, 2.0),
    ("gamma", {"alpha": 26.0, "beta": 25.0}, 1e-10, 10.0),
    ("gamma", {"alpha": 1.5, "beta": 0.5}, 0.0, math.inf),
    ("uniform", {"low": 0.0, "high": 10.0}, 0.0, 10.0),
    ("uniform", {"low": -1.0, "high": 4.0}, 0.0, 3.0),
    ("halfnormal", {"sigma": 2.0}, 0.0, math.inf),
    ("halfnormal", {"sigma": 2.0}, 0.0, 5.0),
    ("cauchy", {"loc": 1.0, "scale": 0.5}, -math.inf, math.inf),
    ("cauchy", {"loc": 1.0, "scale": 0.5}, -2.0, 6.0),
    ("flat", {}, -3.0, 7.0),
])
def test_expression_matches_priorset_log_prob(family, params, lower, upper):
    """Julia expression read back == PriorSet.log_prob up to the truncation constant; same support."""
    entry = _entry(family, params, lower, upper)
    expression = julia_expression(entry)
    read = read_expression(expression)
    prior_set = PriorSet((entry,))
    lo = max(lower, -20.0) if math.isfinite(lower) or family not in ("lognormal", "gamma", "halfnormal") else lower
    lo = 1e-3 if lo <= 0 and family in ("lognormal", "gamma", "halfnormal") else lo
    hi = min(upper, 20.0)
    xs = np.linspace(lo, hi, 41)
    ours = np.asarray(prior_set.log_prob(xs[:, None]), dtype=float)
    theirs = read.logpdf(xs)
    difference = theirs - ours
    assert np.all(np.isfinite(difference)), (expression, xs[~np.isfinite(difference)])
    assert np.ptp(difference) < 1e-9 * max(1.0, np.max(np.abs(ours))), expression
    if not (family == "flat" or (family == "uniform" and (lower, upper) != (params["low"], params["high"]))):
        untruncated = "truncated(" not in expression
        if untruncated:
            assert np.max(np.abs(difference)) < 1e-9, expression
    outside = [x for x in (lower - 1.0, upper + 1.0) if math.isfinite(x)]
    for x in outside:
        assert read.logpdf(x) == -math.inf
        assert float(prior_set.log_prob(np.array([x]))) == -math.inf


def test_expressions_for_every_default_prior(all_kinds):
    """Default priors of a model with every modifier kind: fixed ones excluded, the rest equal up to constants."""
    prior_set = build_priors(all_kinds)
    free, expressions = prior_expressions(prior_set)
    assert free == [int(i) for i in np.flatnonzero(~prior_set.fixed)]
    assert any(prior_set.fixed), "the masked shapesys bin should be fixed"
    rng = np.random.default_rng(1)
    for i, expression in zip(free, expressions):
        entry = prior_set.entries[i]
        lo, hi = max(entry.lower, -4.0), min(entry.upper, 4.0)
        xs = rng.uniform(max(lo, 1e-3) if entry.family == "gamma" else lo, hi, size=9)
        ours = np.asarray(PriorSet((entry,)).log_prob(xs[:, None]), dtype=float)
        difference = read_expression(expression).logpdf(xs) - ours
        assert np.ptp(difference) < 1e-9, (entry.name, expression)


def test_gamma_expression_uses_scale_and_numbers_round_trip():
    assert julia_expression(_entry("gamma", {"alpha": 3.0, "beta": 4.0})) == "Gamma(3.0, 1 / 4.0)"
    assert julia_expression(_entry("normal", {"mu": 0.0, "sigma": 1.0}, -5.0, math.inf)) == \
        "truncated(Normal(0.0, 1.0), -5.0, Inf)"
    rng = np.random.default_rng(0)
    for value in rng.normal(size=20) * 10.0 ** rng.integers(-12, 12, size=20):
        expression = julia_expression(_entry("normal", {"mu": float(value), "sigma": 1.0}))
        assert read_expression(expression).base.mean() == float(value)


@pytest.mark.parametrize("bad", [
    "Beta(1.0, 2.0)", "Gamma(1.0)", "Normal(0.0, -1.0)", "Uniform(2.0, 1.0)", "run(`rm -rf /`)",
    "Normal(0.0, 1.0).mean", "Normal(mu=0.0, sigma=1.0)", "truncated(Normal(0.0, 1.0), 2.0, 1.0)",
    "Normal(NaN, 1.0)", "Normal(Inf, 1.0)", "truncated(Dirac(1.0), 0.0, 2.0)", "Normal(0.0, 1.0",
    "Gamma(-1.0, 1 / 2.0)", "Gamma(1.0, 1 / 0.0)", "Uniform(1.0, 1.0)",
])
def test_reader_rejects_everything_outside_the_grammar(bad):
    with pytest.raises(BayeshfError):
        read_expression(bad)


def test_improper_flat_prior_is_refused():
    with pytest.raises(BayeshfError, match="proper prior"):
        julia_expression(_entry("flat", {}, 0.0, math.inf))
    with pytest.raises(BayeshfError):
        julia_expression(_entry("normal", {"mu": float("nan"), "sigma": 1.0}))


# ----------------------------------------------------------------------------- term bookkeeping


def _random_points(model, prior_set, n, seed):
    """Points near the inits, inside the prior support, fixed parameters at their values."""
    rng = np.random.default_rng(seed)
    lo = np.where(np.isfinite(prior_set.lower), prior_set.lower, -3.0)
    hi = np.where(np.isfinite(prior_set.upper), prior_set.upper, 3.0)
    centre = np.where(prior_set.fixed, prior_set.fixed_values, model.init)
    points = centre + 0.15 * np.minimum(hi - lo, 2.0) * rng.uniform(-1.0, 1.0, size=(n, model.npars))
    points = np.clip(points, lo + 1e-6, hi - 1e-6)
    return np.where(prior_set.fixed, prior_set.fixed_values, points)


@pytest.mark.parametrize("source", [
    "all-kinds", "thesis/2_bin_uncorr.json", "thesis/4_bin.json", "pyhf-validation/1bin_lumi.json",
    "pyhf-validation/2bin_2channel.json",
])
def test_bat_posterior_counts_every_constraint_once(source, all_kinds):
    """BAT's log posterior (likelihood + Distributions.jl priors) == model.logpdf + const; double counting is not."""
    model = all_kinds if source == "all-kinds" else bayeshf.load(DATA / source)
    prior_set = build_priors(model)
    free, expressions = prior_expressions(prior_set)
    read = [read_expression(e) for e in expressions]
    points = _random_points(model, prior_set, 12, seed=7)
    bat, logpdf, double = [], [], []
    for theta in points:
        prior = sum(float(d.logpdf(theta[i])) for i, d in zip(free, read))
        likelihood = float(model.log_likelihood(theta))
        bat.append(likelihood + prior)
        logpdf.append(float(model.logpdf(theta)))
        double.append(likelihood + float(model.log_constraint(theta)) + prior)  # pyhf_logjointof + priors
        assert logpdf[-1] == pytest.approx(likelihood + float(model.log_constraint(theta)), rel=1e-10, abs=1e-9)
    offset = np.array(bat) - np.array(logpdf)
    assert np.ptp(offset) < 1e-8 * max(1.0, np.max(np.abs(logpdf)))
    assert np.ptp(np.array(double) - np.array(logpdf)) > 1e-3  # the test would see a constraint counted twice


def test_posterior_terms_ledger_counts_each_term_once():
    for likelihood, terms in POSTERIOR_TERMS.items():
        assert set(terms) == {"main Poisson term", "constraint terms", "priors of unconstrained parameters"}
        assert terms["main Poisson term"].startswith("likelihood:")
        assert all(terms[t].startswith("prior:") for t in terms if t != "main Poisson term")
    assert "pyhf_logpriorof unused" in POSTERIOR_TERMS["litehf"]["constraint terms"]


# ----------------------------------------------------------------------------- LiteHF


def _litehf_names_from_spec(spec, model):
    """LiteHF.jl's naming rule (src/pyhfparser.jl) applied to the JSON directly."""
    nbins = {c["name"]: len(c["samples"][0]["data"]) for c in spec["channels"]}
    names = set()
    for channel in spec["channels"]:
        for sample_ in channel["samples"]:
            for modifier in sample_["modifiers"]:
                if modifier["type"] in ("staterror", "shapesys", "shapefactor"):
                    names |= {f"{modifier['name']}_bin{i}" for i in range(1, nbins[channel["name"]] + 1)}
                else:
                    names.add(modifier["name"])
    return names


@pytest.mark.parametrize("source", ["all-kinds", "thesis/2_bin_uncorr.json", "pyhf-validation/2bin_2channel.json"])
def test_litehf_names_follow_litehf_rule(source, all_kinds):
    model = all_kinds if source == "all-kinds" else bayeshf.load(DATA / source)
    spec = ALL_KINDS if source == "all-kinds" else json.loads((DATA / source).read_text())
    names = litehf_names(model)
    assert len(names) == model.npars == len(set(names))
    assert set(names) == _litehf_names_from_spec(spec, model)
    for ours, theirs in zip(model.par_names, names):
        match = re.fullmatch(r"(.+)\[(\d+)\]", ours)
        assert theirs == (f"{match[1]}_bin{int(match[2]) + 1}" if match else ours)


def test_litehf_spec_carries_the_models_data_and_measurement(all_kinds):
    spec = json.loads(json.dumps(ALL_KINDS))
    other = json.loads(json.dumps(spec["measurements"][0]))
    other["name"] = "other"
    spec["measurements"].insert(0, other)
    model = bayeshf.load(spec, measurement="meas")
    new_data = np.asarray(model.observed) + 3.0
    shifted = model.with_data(new_data)
    out = litehf_spec(shifted)
    assert out["measurements"][0]["name"] == "meas" and len(out["measurements"]) == 2
    assert out["observations"] == [{"name": "SR", "data": new_data.tolist()}]
    assert spec["measurements"][0]["name"] == "other"  # the model's spec is not modified


def test_litehf_support_checks():
    with pytest.raises(BayeshfError, match="shapefactor"):
        check_litehf_support(bayeshf.load(DATA / "pyhf-validation" / "2bin_2channel_coupledshapefactor.json"))
    with pytest.raises(BayeshfError, match="POI"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_litehf_support(bayeshf.load(DATA / "sbottom" / "RegionA" / "BkgOnly.json"))
    with pytest.warns(UserWarning, match="code1"):
        check_litehf_support(bayeshf.load(DATA / "thesis" / "4_bin.json"))
    same = bayeshf.load(DATA / "thesis" / "4_bin.json",
                        modifier_settings={"normsys": {"interpcode": "code1"}, "histosys": {"interpcode": "code0"}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_litehf_support(same)


# ----------------------------------------------------------------------------- JAX callback


def test_callback_value_and_gradient(all_kinds):
    model, prior_set = all_kinds, build_priors(all_kinds)
    posterior = callback_adapter(model, prior_set)
    likelihood = callback_adapter(model, prior_set, include_prior=False)
    points = _random_points(model, prior_set, 4, seed=3)
    offsets = []
    for theta in points:
        value, gradient = posterior(theta)
        assert isinstance(value, float) and gradient.dtype == np.float64 and gradient.shape == (model.npars,)
        offsets.append(value - float(model.logpdf(theta)))
        assert likelihood.value(list(theta)) == pytest.approx(float(model.log_likelihood(theta)), rel=1e-12)
        assert posterior.value(theta) == pytest.approx(value, rel=1e-13)
        step = 1e-6
        for i in np.flatnonzero(~prior_set.fixed):
            up, down = theta.copy(), theta.copy()
            up[i] += step
            down[i] -= step
            numeric = (posterior.value(up) - posterior.value(down)) / (2 * step)
            assert gradient[i] == pytest.approx(numeric, rel=1e-5, abs=1e-5)
    assert np.ptp(offsets) < 1e-9 * max(1.0, abs(offsets[0]))  # == pyhf logpdf + constant
    with pytest.raises(BayeshfError):
        posterior(np.zeros(model.npars + 1))


def test_pyhf_callback_equals_pyhf_main_term():
    import pyhf

    path = DATA / "thesis" / "4_bin.json"
    model = bayeshf.load(path)
    before = pyhf.get_backend()
    callback = pyhf_callback_adapter(model)
    assert type(pyhf.get_backend()[0]) is type(before[0])  # backend restored
    pyhf.set_backend("numpy")
    reference = pyhf.Workspace(json.loads(path.read_text())).model()
    theta = np.asarray(reference.config.suggested_init(), dtype=float) + 0.1
    expected = float(reference.mainlogpdf(np.asarray(model.observed), theta))
    value, gradient = callback(theta)
    assert value == pytest.approx(expected, rel=1e-10)
    assert value == pytest.approx(float(model.log_likelihood(theta)), rel=1e-10)
    assert np.all(np.isfinite(gradient))


# ----------------------------------------------------------------------------- BAT results


def _loop_expansion(v, logd, weight, chainid, stepno):
    """The oracle: walk each chain step by step, repeating each stored sample weight times."""
    chains = {}
    for row in sorted(range(len(weight)), key=lambda r: (chainid[r], stepno[r])):
        for _ in range(int(weight[row])):
            chains.setdefault(chainid[row], []).append((v[row], logd[row]))
    length = min(len(c) for c in chains.values())
    ids = sorted(chains)
    theta = np.array([[chains[c][k][0] for k in range(length)] for c in ids])
    lp = np.array([[chains[c][k][1] for k in range(length)] for c in ids])
    return theta, lp, ids


def _synthetic(seed=0, npars=3, ids=(7, 2, 5), per_chain=40):
    rng = np.random.default_rng(seed)
    rows = []
    for chain in ids:
        steps = np.cumsum(rng.integers(1, 4, size=per_chain))
        for s in steps:
            rows.append((chain, s))
    rows = [rows[i] for i in rng.permutation(len(rows))]
    chainid = np.array([r[0] for r in rows], dtype=np.int32)
    stepno = np.array([r[1] for r in rows], dtype=np.int64)
    v = rng.normal(size=(len(rows), npars))
    logd = rng.normal(size=len(rows))
    weight = rng.integers(1, 5, size=len(rows)).astype(float)
    return v, logd, weight, chainid, stepno


def test_expand_chains_matches_a_step_by_step_walk():
    arrays = _synthetic()
    theta, lp, ids = expand_chains(BATSamples.from_arrays(*arrays))
    expected_theta, expected_lp, expected_ids = _loop_expansion(*arrays)
    assert list(ids) == expected_ids == [2, 5, 7]
    np.testing.assert_array_equal(theta, expected_theta)
    np.testing.assert_array_equal(lp, expected_lp)
    assert theta.shape[0] == 3 and theta.shape[1] == min(
        int(arrays[2][arrays[3] == c].sum()) for c in (2, 5, 7))


def test_non_integer_weights_are_resampled_deterministically():
    rng = np.random.default_rng(5)
    n = 4000
    v = rng.normal(size=(n, 1))
    weight = np.exp(-0.5 * v[:, 0] ** 2) * 3.7  # importance weights of N(0, 1/2) from N(0, 1)
    chainid = np.repeat([1, 2], n // 2)
    stepno = np.tile(np.arange(n // 2), 2)
    samples = BATSamples.from_arrays(v, np.zeros(n), weight, chainid, stepno)
    first, _, _ = expand_chains(samples, seed=11)
    again, _, _ = expand_chains(samples, seed=11)
    np.testing.assert_array_equal(first, again)
    weighted_mean = np.sum(weight * v[:, 0] ** 2) / np.sum(weight)  # second moment, ~0.5
    resampled = first[..., 0].ravel() ** 2
    standard_error = np.std(v[:, 0] ** 2) / np.sqrt(resampled.size) * 3  # generous: resampling adds variance
    assert abs(resampled.mean() - weighted_mean) < 5 * standard_error


@pytest.mark.parametrize("bad", ["length", "negative", "ndim", "zero"])
def test_bad_bat_arrays_are_refused(bad):
    v, logd, weight, chainid, stepno = _synthetic()
    if bad == "length":
        logd = logd[:-1]
    elif bad == "negative":
        weight[3] = -1.0
    elif bad == "ndim":
        v = v[:, 0]
    else:
        weight[:] = 0.0
    with pytest.raises(BayeshfError):
        BATSamples.from_arrays(v, logd, weight, chainid, stepno)


def test_to_inference_data_keeps_chains_and_layout(all_kinds):
    model = all_kinds
    v, logd, weight, chainid, stepno = _synthetic(npars=model.npars, ids=(3, 9))
    v = v * 0.01 + np.asarray(model.init)
    idata = to_inference_data(BATSamples.from_arrays(v, logd, weight, chainid, stepno), model, prior_draws=0,
                              attrs={"likelihood": "jax"})
    expected_theta, expected_lp, _ = _loop_expansion(v, logd, weight, chainid, stepno)
    posterior = idata.posterior
    assert posterior.sizes["chain"] == 2 and posterior.sizes["draw"] == expected_theta.shape[1]
    for pset in model.parameters:
        values = np.asarray(posterior[pset.name].values).reshape(2, -1, pset.size)
        np.testing.assert_array_equal(values, expected_theta[..., pset.slice])
    np.testing.assert_array_equal(idata.sample_stats["lp"].values, expected_lp)
    assert list(posterior.attrs["bat_chain_ids"]) == [3, 9] and posterior.attrs["likelihood"] == "jax"
    with pytest.raises(BayeshfError):
        to_inference_data(BATSamples.from_arrays(v[:, :2], logd, weight, chainid, stepno), model)


# ----------------------------------------------------------------------------- the Python glue, with a fake Julia


class _FakeJuliaError(Exception):
    pass


class _FakeBridge:
    """Stands in for BayesHFBridge: records what Python passes and answers with BAT-shaped arrays."""

    def __init__(self, fail=False):
        self.calls, self.fail = {}, fail

    #: how the fake orders LiteHF's vector: "input" (the bridge's rule) or "prior_names" (the old, wrong one)
    order = "input"

    def litehf_loglikelihood(self, path, names):
        spec = json.loads(Path(path).read_text())
        self.calls["litehf"] = (spec, names, path)
        self.litehf = _bridge_loglikelihood(spec, names, _iteration(spec, seed=0), self.order)
        return "litehf-loglikelihood"

    def loglikelihood_at(self, loglikelihood, theta):
        assert loglikelihood == "litehf-loglikelihood"
        self.calls.setdefault("checked", []).append(np.array(theta))
        return self.litehf(np.asarray(theta, dtype=float))

    def callback_loglikelihood(self, value, value_and_gradient):
        return ("callback", value, value_and_gradient)

    def sample_posterior(self, loglikelihood, expressions, template, free, sampler, chains, steps, seed):
        if self.fail:
            raise _FakeJuliaError("ArgumentError: something broke in BAT\nStacktrace: ...")
        self.calls["sample"] = dict(loglikelihood=loglikelihood, expressions=expressions, template=np.array(template),
                                    free=np.array(free), sampler=sampler, chains=chains, steps=steps, seed=seed)
        rng = np.random.default_rng(seed)
        n = 30 * chains
        v = np.tile(np.array(template, dtype=float), (n, 1))
        index = np.asarray(free) - 1  # Julia's 1-based indices
        v[:, index] += 0.01 * rng.normal(size=(n, index.size))
        return (v, rng.normal(size=n), rng.integers(1, 3, size=n).astype(float),
                np.repeat(np.arange(chains) + 4, 30), np.tile(np.arange(1, 31), chains))


@pytest.fixture()
def fake_julia(monkeypatch, tmp_path):
    import types

    exe = _fake_julia(tmp_path / "fakebin")
    monkeypatch.setenv("PYTHON_JULIAPKG_EXE", str(exe))
    main = types.SimpleNamespace(seval=lambda code: 1 if "maxthreadid" in code else (
        lambda f, bridge: bridge.callback_loglikelihood(f.value, f)))
    monkeypatch.setitem(sys.modules, "juliacall", types.SimpleNamespace(Main=main, JuliaError=_FakeJuliaError))
    bridge = _FakeBridge()
    monkeypatch.setattr(environment, "_BRIDGE", bridge)
    return bridge


@pytest.mark.parametrize("likelihood", ["litehf", "jax"])
def test_sample_passes_the_right_things_to_julia(fake_julia, likelihood, all_kinds):
    model = bayeshf.load(ALL_KINDS, modifier_settings={"normsys": {"interpcode": "code1"},
                                                       "histosys": {"interpcode": "code0"}})
    prior_set = build_priors(model)
    idata = sample(model, likelihood=likelihood, sampler="nuts", chains=3, steps=50, seed=9, prior_draws=0)
    call = fake_julia.calls["sample"]
    free, expressions = prior_expressions(prior_set)
    assert call["expressions"] == tuple(expressions) and list(call["free"]) == [i + 1 for i in free]
    assert (call["sampler"], call["chains"], call["steps"], call["seed"]) == ("hmc", 3, 50, 9)
    np.testing.assert_array_equal(call["template"][prior_set.fixed], prior_set.fixed_values[prior_set.fixed])
    if likelihood == "litehf":
        spec, names, path = fake_julia.calls["litehf"]
        assert names == tuple(litehf_names(model)) and spec == litehf_spec(model)
        assert not Path(path).exists()  # the temporary workspace is gone
    else:
        kind, value, value_and_gradient = call["loglikelihood"]
        theta = np.asarray(model.init, dtype=float)
        assert value(theta) == pytest.approx(float(model.log_likelihood(theta)), rel=1e-12)  # no prior term
        assert value_and_gradient(theta)[1].shape == (model.npars,)
    assert idata.posterior.sizes["chain"] == 3 and list(idata.posterior.attrs["bat_chain_ids"]) == [4, 5, 6]
    assert idata.posterior.attrs["likelihood"] == likelihood and idata.posterior.attrs["backend"] == "BAT.jl"
    masked = [p for p in model.parameters if p.modifier_type == "shapesys"][0]
    values = np.asarray(idata.posterior[masked.name].values)
    fixed_bins = np.asarray(masked.fixed)
    assert np.all(values[..., fixed_bins] == np.asarray(masked.inits)[fixed_bins])


@pytest.mark.parametrize("runner", RUNNERS)
def test_benchmark_runners_drive_sample(fake_julia, runner):
    from bayeshf.julia.bench import prepare

    spec = json.loads((DATA / "thesis" / "2_bin_uncorr.json").read_text())
    draws = prepare(runner, spec, "nuts", 40, chains=2)(seed=5)
    model = bayeshf.load(spec)
    assert draws.shape[0] == 2 and draws.shape[2] == model.npars
    call = fake_julia.calls["sample"]
    assert (call["sampler"], call["chains"], call["steps"], call["seed"]) == ("hmc", 2, 40, 5)
    if runner == "bat-litehf":
        assert call["loglikelihood"] == "litehf-loglikelihood"
    else:  # both callbacks are the main Poisson term: bayeshf's, or pyhf's (jax backend)
        _, value, _ = call["loglikelihood"]
        theta = np.asarray(model.init, dtype=float) * 1.1
        assert value(theta) == pytest.approx(float(model.log_likelihood(theta)), rel=1e-10)


def test_julia_errors_become_one_sentence(fake_julia):
    fake_julia.fail = True
    with pytest.raises(BayeshfError) as raised:
        sample(ALL_KINDS, likelihood="jax", chains=2, steps=10)
    assert str(raised.value).startswith("BAT.jl failed while sampling") and "\n" not in str(raised.value)
    assert "something broke in BAT" in str(raised.value)


# ----------------------------------------------------------------------------- Julia project files


def test_juliapkg_json_agrees_with_the_julia_project():
    from juliapkg.compat import Compat
    from juliapkg.deps import PkgSpec

    declared = json.loads((ROOT / "bayeshf" / "juliapkg.json").read_text())
    project = tomllib.loads((JULIA_PROJECT / "Project.toml").read_text())
    Compat.parse(declared["julia"])
    assert Compat.parse(declared["julia"]) & Compat.parse("^" + project["compat"]["julia"])
    assert set(declared["packages"]) == set(project["deps"])
    for name, entry in declared["packages"].items():
        PkgSpec(name, entry["uuid"], version=entry["version"])  # juliapkg's own validation
        assert entry["uuid"] == project["deps"][name]
        assert Compat.parse(entry["version"]) and entry["version"] == project["compat"][name]
    assert set(project["deps"]) | set(project["extras"]) - {"Test"} <= set(project["compat"]) | {"Test"}
    assert {"BAT", "LiteHF", "Distributions", "DensityInterface", "AdvancedHMC", "ForwardDiff"} <= set(project["deps"])
    assert project["compat"]["BAT"] == "4"


def test_juliapkg_finds_and_merges_our_requirements():
    """juliapkg's own resolver input (offline: reads the juliapkg.json files only) includes bayeshf's packages."""
    from juliapkg.deps import deps_files, find_requirements

    ours = (ROOT / "bayeshf" / "juliapkg.json").resolve()
    assert any(Path(f).resolve() == ours for f in deps_files())
    compat, packages = find_requirements()
    declared = json.loads(ours.read_text())["packages"]
    found = {p.name: p for p in packages}
    for name, entry in declared.items():
        assert found[name].uuid == entry["uuid"]
    assert "PythonCall" in found and compat  # juliacall's requirement merges with ours


def test_julia_source_defines_what_python_calls():
    source = (JULIA_PROJECT / "src" / "BayesHFBridge.jl").read_text()
    for name in ("litehf_loglikelihood", "callback_loglikelihood", "sample_posterior", "parse_prior"):
        assert re.search(rf"^(function )?{name}\(", source, re.M), name
    sandbox = re.search(r"module PriorSandbox\s+using Distributions: ([^\n]+)", source)[1]
    allowed = re.search(r"const _ALLOWED_CALLS = \(([^)]*)\)", source)[1]
    for constructor in ("Normal", "LogNormal", "Gamma", "Uniform", "Cauchy", "Dirac", "truncated"):
        assert constructor in sandbox and f":{constructor}," in allowed + ","
    for api in ("TransformedMCMC(", "RandomWalk()", "HamiltonianMC()", "PosteriorMeasure(", "bat_sample(",
                "nchains =", "nsteps =", "pyhf_loglikelihoodof(", "info.chainid", "info.stepno"):
        assert api in source, api
    assert "pyhf_logjointof(" not in source  # the constraint terms come from bayeshf's priors only
    tests = (JULIA_PROJECT / "test" / "runtests.jl").read_text()
    assert "BayesHFBridge" in tests


def test_julia_test_inputs_are_current():
    """reference.json of the Julia tests was written from today's Python side (else rerun its make_reference.py)."""
    reference = json.loads((JULIA_PROJECT / "test" / "reference.json").read_text())
    settings = {"normsys": {"interpcode": "code1"}, "histosys": {"interpcode": "code0"}}
    for case in reference["workspaces"]:
        path = (JULIA_PROJECT / "test" / case["path"]).resolve()
        model = bayeshf.load(path, modifier_settings=settings)
        free, expressions = prior_expressions(build_priors(model))
        assert case["litehf_names"] == litehf_names(model) and case["par_names"] == model.par_names
        assert case["prior_expressions"] == expressions and case["free"] == [i + 1 for i in free]
        for theta, main in zip(case["points"], case["main_logpdf"]):  # pyhf's numbers == our model's
            assert float(model.log_likelihood(np.asarray(theta))) == pytest.approx(main, rel=1e-10)


# ----------------------------------------------------------------------------- with Julia


@pytest.mark.julia
@needs_julia
@pytest.mark.parametrize("likelihood, sampler", [("litehf", "mh"), ("jax", "hmc")])
def test_bat_posterior_mean_matches_the_blackjax_posterior(likelihood, sampler):
    """BAT's posterior of the 1-bin shapesys model vs bayeshf's own NUTS, within Monte Carlo error."""
    import arviz as az

    model = bayeshf.load(DATA / "pyhf-validation" / "1bin_shapesys.json")
    idata = sample(model, likelihood=likelihood, sampler=sampler, chains=2, steps=4000, seed=1, prior_draws=0)
    assert idata.posterior.sizes["chain"] == 2
    from bayeshf.sampling import sample as blackjax_sample

    reference = blackjax_sample(model, chains=2, draws=2000, seed=2, progress=False, prior_draws=0)
    mu, mu_ref = idata.posterior["mu"].values, reference.posterior["mu"].values
    error = math.hypot(float(az.mcse(idata.posterior["mu"])), float(az.mcse(reference.posterior["mu"])))
    assert abs(mu.mean() - mu_ref.mean()) < 5 * error


@pytest.mark.julia
@needs_julia
def test_litehf_and_callback_likelihoods_in_julia_equal_the_model():
    """Through juliacall: LiteHF's main term (its codes) and the JAX callback == model.log_likelihood."""
    from bayeshf.julia.sampling import _julia_callback

    bridge = environment.load_bridge()
    settings = {"normsys": {"interpcode": "code1"}, "histosys": {"interpcode": "code0"}}
    model = bayeshf.load(ALL_KINDS, modifier_settings=settings)
    prior_set = build_priors(model)
    with __import__("tempfile").TemporaryDirectory() as tmp:
        path = Path(tmp) / "ws.json"
        path.write_text(json.dumps(litehf_spec(model)))
        litehf = bridge.litehf_loglikelihood(str(path), tuple(litehf_names(model)))
    callback = _julia_callback(callback_adapter(model, prior_set, include_prior=False))
    for theta in _random_points(model, prior_set, 3, seed=4):
        expected = float(model.log_likelihood(theta))
        assert float(bridge.loglikelihood_at(litehf, theta)) == pytest.approx(expected, rel=1e-10)
        assert float(bridge.loglikelihood_at(callback, theta)) == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------- issue 22: LiteHF's parameter order
#
# mini-LiteHF: LiteHF.jl 0.1.1's build_pyhf / expected / pyhf_loglikelihoodof as read in its sources
# (src/pyhfparser.jl, pyhfmodel.jl, modifiers.jl, interpolations.jl): every sample reads the parameter
# vector at the positions of its modifier names in `global_unique`, normsys code1, histosys code0,
# per-bin modifiers a factor in one bin. Its channel and sample order is a Julia Dict's, so tests
# shuffle it.

from bayeshf.julia.litehf import (  # noqa: E402
    litehf_input_order, litehf_reference_model, litehf_sample_names, neutral_modifier)
from bayeshf.julia.sampling import check_litehf_agrees, check_points  # noqa: E402


def _iteration(spec, seed):
    """A channel and sample order as a Julia Dict may iterate them (seed None: JSON order)."""
    rng = np.random.default_rng(seed)
    channels = [c["name"] for c in spec["channels"]]
    samples = {c["name"]: [s["name"] for s in c["samples"]] for c in spec["channels"]}
    if seed is None:
        return [(c, samples[c]) for c in channels]
    return [(channels[i], [samples[channels[i]][j] for j in rng.permutation(len(samples[channels[i]]))])
            for i in rng.permutation(len(channels))]


def _mini_litehf(spec, iteration):
    """(names in the order LiteHF's expected() reads them, alphas -> LiteHF's main log-likelihood)."""
    from scipy.special import gammaln, xlogy

    names = litehf_sample_names(spec)
    order = litehf_input_order(names[c][s] for c, samples in iteration for s in samples)
    position = {name: k for k, name in enumerate(order)}
    channels = {c["name"]: {s["name"]: s for s in c["samples"]} for c in spec["channels"]}
    observed = {o["name"]: np.asarray(o["data"], dtype=float) for o in spec["observations"]}

    def loglikelihood(alphas):
        total = 0.0
        for channel, samples in iteration:
            expected = 0.0
            for sample_name in samples:
                sample = channels[channel][sample_name]
                nominal = np.asarray(sample["data"], dtype=float)
                additive, factor = nominal.copy(), np.ones_like(nominal)
                read = iter(alphas[position[n]] for n in names[channel][sample_name])
                for modifier in sample["modifiers"]:
                    kind, data = modifier["type"], modifier["data"]
                    if kind in ("staterror", "shapesys", "shapefactor"):
                        for i in range(len(data)):
                            factor[i] *= next(read)
                        continue
                    a = next(read)
                    if kind == "normsys":
                        factor *= data["hi"] ** a if a >= 0 else data["lo"] ** -a
                    elif kind == "histosys":
                        hi, lo = np.asarray(data["hi_data"]), np.asarray(data["lo_data"])
                        additive += (hi - nominal) * a if a >= 0 else (nominal - lo) * a
                    else:  # normfactor, lumi
                        factor *= a
                expected = expected + factor * additive
            if np.any(expected < 0):
                return -np.inf
            o = observed[channel]
            total += float(np.sum(xlogy(o, expected) - expected - gammaln(o + 1.0)))
        return total

    return order, loglikelihood


def _bridge_loglikelihood(spec, names, iteration, rule="input"):
    """BayesHFBridge.litehf_loglikelihood on mini-LiteHF: theta (bayeshf order) -> LiteHF's value.

    rule "input": the vector ordered by litehf_input_order (the fix); "prior_names": by LiteHF's
    prior_names, i.e. the same names with the POI moved to the front by sortpoi! (issue 22's bug).
    """
    order, loglikelihood = _mini_litehf(spec, iteration)
    if rule == "prior_names":
        poi = spec["measurements"][0]["config"]["poi"]
        order = [poi] + [n for n in order if n != poi]
    permutation = [list(names).index(n) for n in order]
    return lambda theta: loglikelihood(np.asarray(theta, dtype=float)[permutation])


def _every_workspace():
    cases = []
    for path in sorted(DATA.rglob("*.json")):
        spec = json.loads(path.read_text())
        if "channels" not in spec or "shapefactor" in path.name:  # LiteHF 0.1 cannot build shapefactor
            continue
        patch = sorted(path.parent.glob("patch.*.json"))[:1] if "BkgOnly" in path.name else []
        cases.append(pytest.param(path, patch, id=str(path.relative_to(DATA))))
    return cases


@pytest.mark.parametrize("path, patches", _every_workspace())
def test_litehf_input_order_gives_the_models_likelihood(path, patches):
    """On every workspace in tests/data and several Dict orders, the bridge's order reproduces bayeshf's
    log-likelihood (LiteHF's codes) through mini-LiteHF, and the runtime check lets it through."""
    model = bayeshf.load(path, patches=[str(p) for p in patches])
    spec, names = litehf_spec(model), litehf_names(model)
    prior_set = build_priors(model)
    reference = litehf_reference_model(model)
    sample_names = litehf_sample_names(spec)
    for seed in (None, 0, 1, 2):
        iteration = _iteration(spec, seed)
        order, _ = _mini_litehf(spec, iteration)
        assert sorted(order) == sorted(names)  # each parameter once, LiteHF's names
        litehf = _bridge_loglikelihood(spec, names, iteration)
        for theta in check_points(model, prior_set, 3, seed=5):
            assert litehf(theta) == pytest.approx(float(reference.log_likelihood(theta)), rel=1e-10)
        check_litehf_agrees(litehf, model, prior_set)
        first_seen = [n for c, samples in iteration for s in samples for n in sample_names[c][s]]
        assert order == sorted(set(first_seen), key=first_seen.index)


@pytest.mark.parametrize("source", ["pyhf-validation/1bin_lumi.json", "pyhf-validation/2bin_2channel_couplednorm.json",
                                    "pyhf-validation/2bin_2channel_coupledhisto.json", "thesis/2_bin_corr.json"])
def test_prior_names_order_is_refused_by_the_runtime_check(source):
    """The bug of issue 22 (vector ordered by prior_names) is caught before sampling, in one sentence."""
    model = bayeshf.load(DATA / source)
    spec, names, prior_set = litehf_spec(model), litehf_names(model), build_priors(model)
    caught = 0
    for seed in range(6):
        iteration = _iteration(spec, seed)
        order, _ = _mini_litehf(spec, iteration)
        wrong = _bridge_loglikelihood(spec, names, iteration, rule="prior_names")
        if order[0] == model.poi_name:  # sortpoi! changed nothing: the old rule was right by chance
            check_litehf_agrees(wrong, model, prior_set)
            continue
        with pytest.raises(BayeshfError) as raised:
            check_litehf_agrees(wrong, model, prior_set)
        message = str(raised.value)
        assert "\n" not in message and "LiteHF.jl's log-likelihood" in message and "likelihood='jax'" in message
        caught += 1
    assert caught > 0


def test_the_1bin_lumi_swap_of_the_issue():
    """1bin_lumi with LiteHF reading [lumi, mu]: mu and lumi swapped give another likelihood."""
    model = bayeshf.load(DATA / "pyhf-validation" / "1bin_lumi.json")
    spec = litehf_spec(model)
    samples = {s["name"]: s for s in spec["channels"][0]["samples"]}
    lumi_first = [("channel1", [s for s in samples if s != "signal"] + ["signal"])]
    assert _mini_litehf(spec, lumi_first)[0] == ["lumi", "mu"]
    theta = np.zeros(model.npars)
    theta[model.par_names.index("mu")], theta[model.par_names.index("lumi")] = 2.0, 0.9
    right = _bridge_loglikelihood(spec, litehf_names(model), lumi_first)(theta)
    wrong = _bridge_loglikelihood(spec, litehf_names(model), lumi_first, rule="prior_names")(theta)
    assert right == pytest.approx(float(model.log_likelihood(theta)), rel=1e-12)
    assert abs(wrong - right) > 0.1


def test_check_points_move_every_free_parameter(all_kinds):
    prior_set = build_priors(all_kinds)
    points = check_points(all_kinds, prior_set, 4)
    free = ~prior_set.fixed
    assert points.shape == (4, all_kinds.npars)
    assert np.all(points[:, ~free] == prior_set.fixed_values[~free])
    assert np.all(points >= prior_set.lower) and np.all(points <= prior_set.upper)
    for point in points[1:]:
        assert len(set(np.round(point[free], 12))) == free.sum()  # no two free parameters equal
    np.testing.assert_array_equal(points, check_points(all_kinds, prior_set, 4))  # deterministic


def test_sample_refuses_a_litehf_likelihood_that_disagrees(fake_julia):
    """Through bayeshf.julia.sample: the prior_names order stops the run before BAT; the input order runs."""
    model = bayeshf.load(DATA / "pyhf-validation" / "1bin_lumi.json")
    spec = litehf_spec(model)
    assert _mini_litehf(spec, _iteration(spec, seed=0))[0][0] != model.poi_name  # the fake's Dict order
    fake_julia.order = "prior_names"
    with pytest.raises(BayeshfError, match="LiteHF.jl's log-likelihood of .* is .* where bayeshf's is"):
        sample(model, likelihood="litehf", chains=2, steps=10, prior_draws=0)
    assert "sample" not in fake_julia.calls  # BAT never started
    fake_julia.order = "input"
    idata = sample(model, likelihood="litehf", chains=2, steps=10, prior_draws=0)
    assert idata.posterior.sizes["chain"] == 2 and len(fake_julia.calls["checked"]) >= 4


def test_empty_sample_gets_a_neutral_modifier():
    """Issue 22, item 7: LiteHF never sees a sample without modifiers; the added one changes nothing."""
    spec = json.loads((DATA / "thesis" / "2_bin_corr.json").read_text())
    spec["channels"][0]["samples"].append({"name": "flat", "data": [3.0, 2.0], "modifiers": []})
    model = bayeshf.load(spec)
    out = litehf_spec(model)
    flat = [s for s in out["channels"][0]["samples"] if s["name"] == "flat"][0]
    assert flat["modifiers"] == [neutral_modifier("mu")]
    assert model.spec["channels"][0]["samples"][-1]["modifiers"] == []  # the model's spec untouched
    prior_set = build_priors(model)
    for seed in (None, 0, 3):
        litehf = _bridge_loglikelihood(out, litehf_names(model), _iteration(out, seed))
        check_litehf_agrees(litehf, model, prior_set)  # 1 ** mu == 1: the likelihood is the model's


# ----------------------------------------------------------------------------- issue 22: items 2-6


def test_julia_callbacks_are_pinned_to_the_gil_thread_only_from_python(fake_julia):
    """Item 2: Julia functions may be called from any thread (Pkg.test on Julia 1.12); Python's are pinned."""
    source = (JULIA_PROJECT / "src" / "BayesHFBridge.jl").read_text()
    assert "callback_loglikelihood(value, value_and_gradient; thread=nothing)" in source
    assert re.search(r"c\.thread === nothing \|\| Threads\.threadid\(\) == c\.thread", source)
    assert "Threads.threadid() == 1" not in source
    seen = []
    main = sys.modules["juliacall"].Main
    original = main.seval
    main.seval = lambda code: seen.append(code) or original(code)
    from bayeshf.julia.sampling import _julia_callback

    _julia_callback(callback_adapter(bayeshf.load(ALL_KINDS), include_prior=False))
    assert any("thread = Threads.threadid()" in code for code in seen)


def test_julia_tests_accept_step_number_zero():
    """Item 3: BAT's next_cycle! gives the first output sample stepno 0."""
    tests = (JULIA_PROJECT / "test" / "runtests.jl").read_text()
    assert "all(>(0), stepno)" not in tests and "all(>=(0), stepno)" in tests


def test_wheel_contains_the_julia_sources(tmp_path):
    """Item 4: the built package carries src/BayesHFBridge.jl and Project.toml where julia_project_dir looks."""
    import shutil
    import zipfile

    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "bayeshf", source / "bayeshf", ignore=shutil.ignore_patterns("__pycache__"))
    script = textwrap.dedent(f"""
        import importlib.util, sys
        if importlib.util.find_spec("wheel") or importlib.util.find_spec("setuptools.command.bdist_wheel"):
            from setuptools import build_meta
            print("WHEEL", build_meta.build_wheel({str(tmp_path / "dist")!r}))
        else:  # no bdist_wheel (setuptools < 70.1 without wheel): build_py chooses the wheel's files
            sys.argv = ["setup.py", "-q", "build_py", "--build-lib", {str(tmp_path / "lib")!r}]
            from setuptools import setup
            setup()
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=source, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    wanted = {"bayeshf/julia_project/src/BayesHFBridge.jl", "bayeshf/julia_project/Project.toml",
              "bayeshf/juliapkg.json", "bayeshf/julia/environment.py"}
    if "WHEEL" in out.stdout:
        wheel = tmp_path / "dist" / out.stdout.split("WHEEL", 1)[1].strip()
        names = set(zipfile.ZipFile(wheel).namelist())
    else:
        names = {str(p.relative_to(tmp_path / "lib")) for p in (tmp_path / "lib").rglob("*") if p.is_file()}
    assert wanted <= names, wanted - names
    installed = tmp_path / "site"
    for name in wanted:
        target = installed / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if "WHEEL" in out.stdout:
            target.write_bytes(zipfile.ZipFile(wheel).read(name))
        else:
            shutil.copy(tmp_path / "lib" / name, target)
    assert (installed / "bayeshf" / "julia_project" / "src" / "BayesHFBridge.jl").read_text() == \
        (JULIA_PROJECT / "src" / "BayesHFBridge.jl").read_text()


def test_julia_project_dir_is_inside_the_package(monkeypatch, tmp_path):
    monkeypatch.delenv("BAYESHF_JULIA_PROJECT", raising=False)
    assert environment.julia_project_dir() == Path(bayeshf.__file__).resolve().parent / "julia_project"
    monkeypatch.setenv("BAYESHF_JULIA_PROJECT", str(tmp_path))
    with pytest.raises(BayeshfError, match="BAYESHF_JULIA_PROJECT") as raised:
        environment.julia_project_dir()
    assert "\n" not in str(raised.value)


def test_cli_passes_shapesys_to_bat(monkeypatch, tmp_path):
    """Item 5: `--shapesys` reaches bayeshf.julia.sample with --backend bat."""
    import bayeshf.julia
    from bayeshf.cli import main

    seen = {}

    def fake_sample(model, **kwargs):
        seen.update(kwargs)
        raise BayeshfError("stop here")

    monkeypatch.setattr(bayeshf.julia, "sample", fake_sample)
    for value in ("unit-mean", "flat"):
        code = main(["sample", str(DATA / "pyhf-validation" / "1bin_shapesys.json"), "--backend", "bat",
                     "--shapesys", value, "--out", str(tmp_path / "out"), "--quiet"])
        assert code == 2 and seen["shapesys"] == value


def test_julia_sample_uses_the_shapesys_convention(fake_julia):
    model = bayeshf.load(DATA / "pyhf-validation" / "1bin_shapesys.json")
    sample(model, likelihood="jax", chains=2, steps=10, prior_draws=0, shapesys="unit-mean")
    _, unit_mean = prior_expressions(build_priors(model, shapesys="unit-mean"))
    _, flat = prior_expressions(build_priors(model, shapesys="flat"))
    assert fake_julia.calls["sample"]["expressions"] == tuple(unit_mean) != tuple(flat)


def _recording_resolve(calls):
    """Stands in for juliapkg.resolve: looks for Julia the way juliapkg 0.1.28's resolve does."""
    import juliapkg.deps

    def resolve(**kwargs):
        calls.append(juliapkg.deps.find_julia(compat=None, prefix="/nonexistent", install=True, upgrade=True))
        return True

    return resolve


@pytest.mark.parametrize("download", [False, True])
def test_setup_downloads_julia_only_with_download(no_julia, monkeypatch, tmp_path, download):
    """Item 6: without --download juliapkg may look for Julia but not install one."""
    import juliapkg
    import juliapkg.deps

    from bayeshf.cli import main

    monkeypatch.setenv("PYTHON_JULIAPKG_EXE", str(_fake_julia(tmp_path / "bin")))
    monkeypatch.setitem(juliapkg.state.STATE, "override_executable", None)
    lookups, calls = [], []
    finder = lambda **kwargs: lookups.append(kwargs) or ("/opt/julia/bin/julia", "1.11.0")  # noqa: E731
    monkeypatch.setattr(juliapkg.deps, "find_julia", finder)
    monkeypatch.setattr(juliapkg, "resolve", _recording_resolve(calls))
    monkeypatch.setattr(juliapkg, "executable", lambda: "/opt/julia/bin/julia")
    monkeypatch.setattr(juliapkg, "project", lambda: str(tmp_path))
    assert main(["julia", "setup", "--no-load"] + (["--download"] if download else [])) == 0
    assert [(k["install"], k["upgrade"]) for k in lookups] == [(download, download)]
    assert juliapkg.deps.find_julia is finder  # restored


def test_setup_without_download_explains_the_openssl_limit(no_julia, monkeypatch, tmp_path, capsys):
    """A Julia 1.12 on PATH where juliapkg accepts 1.11 at most: juliapkg's real find_julia looks, finds
    nothing it accepts, downloads nothing, and the user gets one sentence."""
    import juliapkg
    import juliapkg.deps
    import juliapkg.find_julia as finder
    from juliapkg.compat import Compat

    from bayeshf.cli import main

    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "julia"
    exe.write_text("#!/bin/sh\necho 'julia version 1.12.1'\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    monkeypatch.setitem(juliapkg.state.STATE, "override_executable", None)
    monkeypatch.setattr(juliapkg.deps, "openssl_compat", lambda version=None: ("3 - 3.0", "1 - 1.11"))
    monkeypatch.setattr(finder, "install_julia", lambda *a, **k: pytest.fail("juliapkg tried to install Julia"))
    monkeypatch.setattr(finder, "best_julia_version", lambda *a, **k: pytest.fail("juliapkg asked the internet"))

    def resolve(**kwargs):  # juliapkg 0.1.28's call, with the merged compat
        juliapkg.deps.find_julia(compat=Compat.parse("1 - 1.11"), prefix=str(tmp_path / "prefix"),
                                 install=True, upgrade=True)

    monkeypatch.setattr(juliapkg, "resolve", resolve)
    assert main(["julia", "setup", "--no-load"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.match(r"bayeshf julia: error: juliapkg accepts Julia [0-9.]+ - 1\.11 here \(juliacall requires an OpenSSL",
                    err), err
    assert "--download" in err and "PYTHON_JULIAPKG_EXE" in err


def test_setup_refuses_a_pinned_julia_juliapkg_would_not_accept(no_julia, monkeypatch, tmp_path):
    import juliapkg
    import juliapkg.deps
    from juliapkg.compat import Compat

    from bayeshf.cli import main

    exe = tmp_path / "julia"
    exe.write_text("#!/bin/sh\necho 'julia version 1.12.1'\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PYTHON_JULIAPKG_EXE", str(exe))
    monkeypatch.setitem(juliapkg.state.STATE, "override_executable", str(exe))
    monkeypatch.setattr(juliapkg.deps, "find_requirements", lambda: (Compat.parse("1 - 1.11"), []))
    monkeypatch.setattr(juliapkg, "resolve", lambda **kwargs: pytest.fail("resolved with an unusable Julia"))
    assert main(["julia", "setup", "--no-load"]) == 2


def test_juliapkg_resolve_still_asks_find_julia_to_install():
    """The call `julia_lookup_only` rewrites is still there (juliapkg 0.1.28's resolve)."""
    import inspect

    import juliapkg.deps
    import juliapkg.find_julia

    source = inspect.getsource(juliapkg.deps.resolve)
    assert "find_julia(" in source and "install=True" in source
    assert juliapkg.deps.find_julia is juliapkg.find_julia.find_julia


def test_libstdcxx_clash_is_one_sentence(no_julia, monkeypatch, tmp_path):
    """Item 7: Julia failing on an older libstdc++ (loaded by jaxlib first) says how to import juliacall first."""
    import types

    monkeypatch.setenv("PYTHON_JULIAPKG_EXE", str(_fake_julia(tmp_path / "bin")))
    monkeypatch.setattr(environment, "packages_ready", lambda: True)

    def seval(code):
        raise Exception("could not load library \"libjulia-codegen.so.1\"\n"
                        "/lib/x86_64-linux-gnu/libstdc++.so.6: version `GLIBCXX_3.4.32' not found")

    monkeypatch.setitem(sys.modules, "juliacall", types.SimpleNamespace(Main=types.SimpleNamespace(seval=seval)))
    with pytest.raises(BayeshfError) as raised:
        environment.load_bridge()
    message = str(raised.value)
    assert "\n" not in message and "import juliacall" in message and "LD_PRELOAD" in message
    assert "libjulia-codegen" in message


@pytest.mark.julia
@needs_julia
@pytest.mark.parametrize("path, patches", _every_workspace())
def test_litehf_in_julia_equals_the_model_on_every_workspace(path, patches):
    """Where Julia runs: LiteHF's likelihood through the bridge == bayeshf's (LiteHF's codes), and Julia's
    input order == the Python mirror applied to the Dict order LiteHF iterates."""
    bridge = environment.load_bridge()
    model = bayeshf.load(path, patches=[str(p) for p in patches])
    if model.poi_name is None:
        pytest.skip("LiteHF needs a POI")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "ws.json"
        file.write_text(json.dumps(litehf_spec(model)))
        litehf = bridge.litehf_loglikelihood(str(file), tuple(litehf_names(model)))
        order = [str(n) for n in bridge.litehf_parameter_names(str(file))]
    assert sorted(order) == sorted(litehf_names(model))
    check_litehf_agrees(lambda theta: bridge.loglikelihood_at(litehf, theta), model, build_priors(model), n=6)
