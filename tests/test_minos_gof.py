"""MINOS intervals against iminuit's MINOS, and the saturated-model goodness of fit against pyhf's likelihood."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats

import bayeshf
from bayeshf.cli import main
from bayeshf.scans import minos

from conftest import data_path, pyhf_model

MINOS_CASES = ["thesis/4_bin.json", "pyhf-validation/2bin_2channel_couplednorm.json"]


def _iminuit_minos(model, start):
    """iminuit's MIGRAD + MINOS on the model's twice_nll (errordef 1), limits from the bounds."""
    import iminuit
    import jax

    value = jax.jit(model.twice_nll)
    grad = jax.jit(jax.grad(model.twice_nll))
    m = iminuit.Minuit(lambda x: float(value(x)), np.asarray(start, float), grad=lambda x: np.asarray(grad(x)),
                       name=model.par_names)
    m.errordef = 1.0
    m.strategy = 2
    m.tol = 1e-6
    m.limits = [tuple(b) for b in np.asarray(model.bounds)]
    m.migrad()
    m.minos()
    return m.merrors


@pytest.mark.parametrize("path", MINOS_CASES, ids=[p.split("/")[-1] for p in MINOS_CASES])
def test_minos_matches_iminuit(path):
    model = bayeshf.load(str(data_path(path)))
    ours = minos(model)
    theirs = _iminuit_minos(model, bayeshf.fit(model).bestfit)
    assert set(ours) == set(model.par_names)
    for name, interval in ours.items():
        assert interval.lower == pytest.approx(theirs[name].lower, rel=1e-3)
        assert interval.upper == pytest.approx(theirs[name].upper, rel=1e-3)
        assert not (interval.lower_at_bound or interval.upper_at_bound)
    # asymmetric where the likelihood is: the POI's upper error differs from its lower one
    mu = ours[model.poi_name]
    assert abs(mu.upper + mu.lower) > 1e-3 * mu.upper


def test_minos_interval_cut_at_a_bound():
    """mu_hat = 0.22 with mu >= 0: the lower 68% crossing lies below the bound, so the interval stops there."""
    model = bayeshf.load(str(data_path("pyhf-validation/2bin_2channel.json")))
    result = minos(model, ["mu"])["mu"]
    assert result.lower_at_bound and result.lower == pytest.approx(-result.bestfit, abs=1e-12)
    assert not result.upper_at_bound
    best = bayeshf.fit(model)
    at_upper = bayeshf.fit(model, fixed={"mu": result.bestfit + result.upper})
    at_zero = bayeshf.fit(model, fixed={"mu": 0.0})
    assert at_upper.twice_nll - best.twice_nll == pytest.approx(1.0, abs=1e-7)
    assert at_zero.twice_nll - best.twice_nll < 1.0


def test_fit_cli_minos(capsys):
    path = str(data_path("thesis/4_bin.json"))
    assert main(["fit", path, "--minos", "all", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    model = bayeshf.load(path)
    assert set(document["minos"]) == set(model.par_names)
    direct = minos(model, ["mu"])["mu"]
    assert document["minos"]["mu"]["upper"] == pytest.approx(direct.upper, rel=1e-9)
    assert main(["fit", path, "--minos", "mu"]) == 0
    assert "minos +" in capsys.readouterr().out
    assert main(["fit", path, "--minos", "nope"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "4_bin.json" in err and err.count("\n") == 1


def _pyhf_saturated_pvalue(path, twice_nll_at):
    """cabinetry's saturated-model test written against pyhf's objects (an implementation independent of ours)."""
    pm, data = pyhf_model(data_path(path))
    data = np.asarray(data, float)
    main_data, aux = data[: pm.config.nmaindata], data[pm.config.nmaindata:]
    pars = np.asarray(pm.config.suggested_init(), float)
    position = 0
    for name in pm.config.auxdata_order:
        ps = pm.config.param_set(name)
        n = ps.n_parameters
        values = aux[position: position + n]
        if ps.pdf_type == "poisson":
            values = values / np.asarray(ps.factors, float)
        pars[pm.config.par_slice(name)] = values
        position += n
    import pyhf

    poisson = float(np.sum(pyhf.tensorlib.poisson_dist(main_data).log_prob(main_data)))  # pyhf's continuous Poisson
    saturated = -2.0 * (poisson + float(np.sum(pm.constraint_logpdf(aux, pars))))
    unconstrained = sum(pm.config.param_set(n).suggested_fixed.count(False) for n in pm.config.par_order
                        if not pm.config.param_set(n).constrained)
    ndof = pm.config.nmaindata - unconstrained
    best = float(-2.0 * np.sum(pm.logpdf(twice_nll_at, data)))
    return scipy.stats.chi2.sf(best - saturated, ndof), ndof


GOF_CASES = ["thesis/4_bin.json", "pyhf-validation/2bin_2channel.json", "pyhf-validation/2bin_2channel_couplednorm.json",
             "atlas-examples/SRee_SRmm_Srem_v2.json"]


@pytest.mark.parametrize("path", GOF_CASES, ids=[p.split("/")[-1] for p in GOF_CASES])
def test_goodness_of_fit_matches_an_independent_computation(path, capsys):
    model = bayeshf.load(str(data_path(path)))
    result = bayeshf.fit(model)
    p_value, ndof = _pyhf_saturated_pvalue(path, result.bestfit)
    assert result.gof_ndof == ndof
    if ndof > 0:
        assert result.gof_pvalue == pytest.approx(p_value, rel=1e-8)
        assert 0.0 < result.gof_pvalue <= 1.0
    else:
        assert np.isnan(result.gof_pvalue)
    assert main(["fit", str(data_path(path)), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["goodness_of_fit"]["ndof"] == ndof
