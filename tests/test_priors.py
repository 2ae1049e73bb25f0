"""Priors: derived defaults (flat reference convention), priors files, jittable log_prob and sample.

Oracles: pyhf's logpdf (the flat-reference posterior equals it up to a
constant), scipy.stats densities and distributions.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st

import bayeshf
from bayeshf.errors import BayeshfError
from bayeshf.priors import FAMILIES, PriorEntry, PriorSet, build_priors
from tests.conftest import data_path, pyhf_model

REPO = Path(__file__).resolve().parents[1]
CASES = [
    ("thesis/2_bin_uncorr.json", None),
    ("thesis/4_bin.json", None),
    ("pyhf-validation/1bin_lumi.json", None),
    ("pyhf-validation/2bin_2channel_coupledshapefactor.json", None),
    ("sbottom/RegionA/BkgOnly.json", "sbottom/RegionA/patch.sbottom_1300_205_60.json"),
]


def load(path, patch=None):
    return bayeshf.load(data_path(path), patches=[data_path(patch)] if patch else None)


@pytest.mark.parametrize("case", CASES, ids=lambda c: Path(c[0]).stem)
def test_flat_reference_posterior_equals_pyhf_logpdf_up_to_a_constant(case):
    model = load(*case)
    pmodel, pdata = pyhf_model(data_path(case[0]), data_path(case[1]) if case[1] else None)
    prior_set = build_priors(model)
    draws = np.asarray(prior_set.sample(jax.random.PRNGKey(3), 6))
    differences = []
    for theta in draws:
        ours = float(model.log_likelihood(theta) + prior_set.log_prob(theta))
        reference = float(pmodel.logpdf(theta, pdata)[0])
        differences.append(ours - reference)
    assert np.ptp(differences) < 1e-8 * max(1.0, abs(np.mean(differences)))


def test_default_families_follow_the_constraints():
    model = load("sbottom/RegionA/BkgOnly.json", "sbottom/RegionA/patch.sbottom_1300_205_60.json")
    pmodel, _ = pyhf_model(data_path("sbottom/RegionA/BkgOnly.json"),
                           data_path("sbottom/RegionA/patch.sbottom_1300_205_60.json"))
    prior_set = build_priors(model)
    assert [e.name for e in prior_set.entries] == list(pmodel.config.par_names)
    for name in pmodel.config.par_order:
        pset = pmodel.config.param_set(name)
        sl = pmodel.config.par_slice(name)
        for j, entry in enumerate(prior_set.entries[sl]):
            if pset.suggested_fixed[j] if isinstance(pset.suggested_fixed, list) else pset.suggested_fixed:
                assert entry.family == "fixed"
            elif getattr(pset, "constrained", False) and pset.pdf_type == "normal":
                assert entry.family == "normal"
                assert entry.params["sigma"] == pytest.approx(pset.width()[j])
                assert entry.params["mu"] == pytest.approx(pset.auxdata[j])
            elif not getattr(pset, "constrained", False):
                assert entry.family == "uniform"
                assert (entry.params["low"], entry.params["high"]) == tuple(pset.suggested_bounds[j])
            assert (entry.lower, entry.upper) <= tuple(pset.suggested_bounds[j]) or entry.family == "fixed"


@pytest.mark.parametrize("shapesys,shift", [("flat", 1.0), ("unit-mean", 0.0)])
def test_shapesys_conventions(shapesys, shift):
    model = load("thesis/2_bin_uncorr.json")
    pmodel, _ = pyhf_model(data_path("thesis/2_bin_uncorr.json"))
    pset = pmodel.config.param_set("uncorr_bkguncrt")
    prior_set = build_priors(model, shapesys=shapesys)
    gammas = [e for e in prior_set.entries if e.name.startswith("uncorr_bkguncrt")]
    for j, entry in enumerate(gammas):
        assert entry.family == "gamma"
        assert entry.params["alpha"] == pytest.approx(pset.auxdata[j] + shift)
        assert entry.params["beta"] == pytest.approx(pset.factors[j])
    if shapesys == "unit-mean":
        mean = [e.params["alpha"] / e.params["beta"] for e in gammas]
        np.testing.assert_allclose(mean, 1.0)


def _scipy(family, params):
    return {
        "normal": lambda p: st.norm(p["mu"], p["sigma"]),
        "lognormal": lambda p: st.lognorm(s=p["sigma"], scale=math.exp(p["mu"])),
        "gamma": lambda p: st.gamma(p["alpha"], scale=1 / p["beta"]),
        "uniform": lambda p: st.uniform(p["low"], p["high"] - p["low"]),
        "halfnormal": lambda p: st.halfnorm(scale=p["sigma"]),
        "cauchy": lambda p: st.cauchy(p["loc"], p["scale"]),
    }[family](params)


FAMILY_CASES = [
    ("normal", {"mu": 0.3, "sigma": 1.7}, -2.0, 3.0),
    ("lognormal", {"mu": 0.1, "sigma": 0.4}, 0.0, math.inf),
    ("gamma", {"alpha": 2.5, "beta": 3.0}, 0.0, math.inf),
    ("gamma", {"alpha": 0.4, "beta": 1.0}, 0.0, 5.0),
    ("uniform", {"low": -1.0, "high": 4.0}, -1.0, 4.0),
    ("halfnormal", {"sigma": 2.0}, 0.0, 3.0),
    ("cauchy", {"loc": 1.0, "scale": 0.5}, -10.0, 10.0),
]


@pytest.mark.parametrize("family,params,lower,upper", FAMILY_CASES, ids=[c[0] for c in FAMILY_CASES])
def test_family_log_prob_and_truncated_sampling_match_scipy(family, params, lower, upper):
    prior_set = PriorSet((PriorEntry("x", family, params, lower, upper),
                          PriorEntry("y", "fixed", {"value": 2.0}, 2.0, 2.0)))
    reference = _scipy(family, params)
    xs = np.linspace(max(lower, -3.0) + 1e-3, min(upper, 4.0) - 1e-3, 7)
    ours = jax.vmap(prior_set.log_prob)(jnp.column_stack([xs, np.full(7, 2.0)]))
    np.testing.assert_allclose(ours, reference.logpdf(xs), rtol=1e-10, atol=1e-12)
    assert prior_set.log_prob(jnp.array([upper + 1.0 if math.isfinite(upper) else lower - 1.0, 2.0])) == -math.inf
    draws = np.asarray(prior_set.sample(jax.random.PRNGKey(11), 4000))
    assert np.all(draws[:, 1] == 2.0)
    assert np.all((draws[:, 0] >= lower) & (draws[:, 0] <= upper))
    # truncated CDF of the reference distribution; KS at a fixed seed
    lo_cdf, hi_cdf = reference.cdf(lower), reference.cdf(upper)
    pvalue = st.kstest(draws[:, 0], lambda x: (reference.cdf(x) - lo_cdf) / (hi_cdf - lo_cdf)).pvalue
    assert pvalue > 1e-3


def test_log_prob_is_jittable_and_differentiable():
    model = load("thesis/4_bin.json")
    prior_set = build_priors(model)
    theta = jnp.asarray(model.init, dtype=float)
    value, grad = jax.jit(jax.value_and_grad(prior_set.log_prob))(theta)
    assert np.isfinite(value) and np.all(np.isfinite(np.asarray(grad)))


def test_priors_file_overrides_by_set_and_by_scalar(tmp_path):
    model = load("thesis/2_bin_uncorr.json")
    spec = {"priors": {
        "mu": {"family": "normal", "mu": 1.0, "sigma": 0.5},
        "uncorr_bkguncrt": {"family": "lognormal", "mu": [0.0, 0.1], "sigma": 0.2},
        "uncorr_bkguncrt[1]": {"family": "fixed", "value": 1.0},
    }}
    path = tmp_path / "priors.json"
    path.write_text(json.dumps(spec))
    prior_set = build_priors(model, path)
    mu, g0, g1 = prior_set.entries
    assert (mu.family, mu.params, mu.lower, mu.upper) == ("normal", {"mu": 1.0, "sigma": 0.5}, 0.0, 10.0)
    assert g0.family == "lognormal" and g0.params == {"mu": 0.0, "sigma": 0.2} and g0.source == str(path)
    assert g1.family == "fixed" and g1.params == {"value": 1.0}
    assert list(prior_set.fixed) == [False, False, True]


def test_yaml_priors_file_and_bounds(tmp_path):
    model = load("thesis/4_bin.json")
    path = tmp_path / "priors.yaml"
    path.write_text("shapesys: unit-mean\npriors:\n  mu:\n    family: halfnormal\n    sigma: 3\n    bounds: [0, null]\n")
    prior_set = build_priors(model, path)
    entry = prior_set["mu"]
    assert entry.family == "halfnormal" and entry.lower == 0.0 and entry.upper == math.inf
    assert prior_set.shapesys == "unit-mean"


EXAMPLES = [p for p in sorted((REPO / "priors").glob("*.json")) + sorted((REPO / "priors").glob("*.yaml"))
            if p.name != "priors.schema.json"]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_worked_examples_apply(example):
    text = example.read_text()
    workspace = re.search(r"workspace: (\S+?\.json(?: \+ \S+?\.json)?)", text).group(1)
    model = load(*workspace.split(" + ")) if " + " in workspace else load(workspace)
    prior_set = build_priors(model, example)
    assert any(e.source == str(example) for e in prior_set.entries)


def test_packaged_schema_equals_the_repository_schema():
    assert (REPO / "priors" / "priors.schema.json").read_text() == \
        (REPO / "bayeshf" / "schemas" / "priors.schema.json").read_text()


BAD = [
    ({"priors": {"mu": {"family": "gausian", "mu": 0, "sigma": 1}}}, "unknown family"),
    ({"priors": {"nope": {"family": "normal", "mu": 0, "sigma": 1}}}, "names no parameter"),
    ({"priors": {"mu": {"family": "normal", "mu": 0}}}, "needs 'sigma'"),
    ({"priors": {"mu": {"family": "normal", "mu": 0, "sigma": -1}}}, "must be positive"),
    ({"priors": {"mu": {"family": "normal", "mu": 0, "sigma": 1, "scale": 2}}}, "unknown key"),
    ({"priors": {"uncorr_bkguncrt": {"family": "gamma", "alpha": [1, 2, 3], "beta": 1}}}, "3 values"),
    ({"priors": {"mu": {"family": "uniform", "low": 20, "high": 30, "bounds": [0, 10]}}}, "no support"),
    ({"prior": {}}, "\"priors\" mapping"),
    ({"priors": {}, "shapesys": "wide"}, "shapesys"),
]


@pytest.mark.parametrize("spec,fragment", BAD, ids=[b[1] for b in BAD])
def test_bad_priors_files_give_one_sentence_naming_file_and_cause(tmp_path, spec, fragment):
    model = load("thesis/2_bin_uncorr.json")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(BayeshfError) as error:
        build_priors(model, path)
    message = str(error.value)
    assert str(path) in message and fragment in message
    assert "\n" not in message


def test_unparsable_priors_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{priors: ")
    with pytest.raises(BayeshfError, match="malformed JSON"):
        build_priors(load("thesis/4_bin.json"), path)


def test_cli_priors_table_and_bad_file(tmp_path):
    ws = str(data_path("thesis/2_bin_uncorr.json"))
    ok = subprocess.run([sys.executable, "-m", "bayeshf", "priors", ws], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "Gamma(alpha=101, beta=100)" in ok.stdout and "Uniform(low=0, high=10)" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("priors:\n  mu: {family: normal, mu: 0}\n")
    result = subprocess.run([sys.executable, "-m", "bayeshf", "priors", ws, "--priors", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and str(bad) in result.stderr and "Traceback" not in result.stderr


def test_every_family_is_documented_in_the_schema():
    schema = json.loads((REPO / "priors" / "priors.schema.json").read_text())
    assert set(schema["$defs"]["prior"]["properties"]["family"]["enum"]) == set(FAMILIES)
