"""Plots: data/model (datamc), and what the frequentist and Bayesian plots must show (nothing silently dropped)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import bayeshf
from bayeshf.cli import main

from conftest import data_path

CORR = str(data_path("thesis/2_bin_corr.json"))
TWO_CHANNELS = str(data_path("pyhf-validation/2bin_2channel_couplednorm.json"))


def saved_posterior(model, path: Path, *, seed: int = 0, chains: int = 2, draws: int = 150) -> Path:
    """A posterior.nc in bayeshf's layout from draws scattered around the inits (no sampling needed)."""
    from bayeshf.idata import from_parameter_draws

    rng = np.random.default_rng(seed)
    init = np.asarray(model.init, dtype=float)
    theta = init + 0.1 * rng.normal(size=(chains, draws, model.npars))
    theta = np.clip(theta, model.bounds[:, 0] + 1e-3, model.bounds[:, 1])
    idata = from_parameter_draws(model, theta, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    idata.to_netcdf(str(path))
    return path


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --- datamc ----------------------------------------------------------------------------------------


def test_datamc_prefit_postfit_posterior(tmp_path, capsys):
    model = bayeshf.load(CORR)
    posterior = saved_posterior(model, tmp_path / "run" / "posterior.nc")
    out = tmp_path / "datamc"
    assert main(["datamc", CORR, "--fit", "--posterior", str(posterior), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for kind in ("prefit", "postfit", "posterior"):
        assert (out / f"{kind}_singlechannel.png").stat().st_size > 5000
    assert "singlechannel (post-fit)" in printed and "background" in printed and "data" in printed
    document = json.loads((out / "yields.json").read_text())
    assert set(document) == {"prefit", "postfit", "posterior"}
    channel = document["postfit"]["channels"]["singlechannel"]
    assert channel["observed"]["yields"] == list(model.observed)
    # the stacked samples add up to the total
    stacked = np.sum([v["yields"] for v in channel["samples"].values()], axis=0)
    np.testing.assert_allclose(stacked, channel["total"]["yields"], rtol=1e-12)
    posterior_total = document["posterior"]["channels"]["singlechannel"]["total"]
    low, high = np.asarray(posterior_total["band"])
    assert np.all(low < posterior_total["yields"]) and np.all(posterior_total["yields"] < high)
    plow, phigh = np.asarray(posterior_total["predictive_band"])  # Poisson noise widens the predictive band
    assert np.all(phigh - plow > high - low)


def test_datamc_many_channels_get_a_summary(tmp_path, capsys):
    out = tmp_path / "summary"
    assert main(["datamc", TWO_CHANNELS, "--max-channels", "1", "--out", str(out), "--style", "atlas"]) == 0
    assert "more than --max-channels 1" in capsys.readouterr().err
    assert sorted(p.name for p in out.glob("*.png")) == ["prefit_summary.png"]
    out_all = tmp_path / "all"
    assert main(["datamc", TWO_CHANNELS, "--max-channels", "1", "--all-channels", "--out", str(out_all)]) == 0
    assert len(list(out_all.glob("prefit_*.png"))) == 3


def test_datamc_figure_shows_the_data_and_the_ratio():
    from bayeshf.plots.datamc import data_mc, data_mc_summary
    from bayeshf.yields import yields

    model = bayeshf.load(TWO_CHANNELS)
    result = yields(model)
    channel = model.channels[1]
    fig = data_mc(result, channel, style="plain")
    ax, rax = fig.axes[:2]
    sl = model.channel_slices[channel]
    points = [c for c in ax.containers if hasattr(c, "lines") and c.lines[0] is not None]
    np.testing.assert_allclose(points[-1].lines[0].get_ydata(), model.observed[sl])
    ratio = [c for c in rax.containers if hasattr(c, "lines")][-1].lines[0].get_ydata()
    np.testing.assert_allclose(ratio, model.observed[sl] / result.total[sl])
    assert channel in " ".join(t.get_text() for t in ax.texts)
    summary = data_mc_summary(result, style="cms")
    labels = [t.get_text() for t in summary.axes[1].get_xticklabels()]
    assert labels == list(model.channels)


def test_datamc_bad_input_is_one_sentence(tmp_path, capsys):
    other = saved_posterior(bayeshf.load(TWO_CHANNELS), tmp_path / "other.nc")
    cases = [
        (["--posterior", str(other)], "sampled from another model"),
        (["--posterior", str(tmp_path / "missing.nc")], "missing.nc: no such"),
        (["--max-channels", "0"], "--max-channels must be at least 1"),
    ]
    for extra, message in cases:
        assert main(["datamc", CORR, "--out", str(tmp_path / "x"), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(_lines(err)) == 1, err
    assert main(["datamc", CORR, "--out", str(tmp_path / "x"), "--style", "lhcb"]) == 2  # argparse's error
    assert "invalid choice" in capsys.readouterr().err


# --- ArviZ ------------------------------------------------------------------------------------------


def test_saved_posterior_works_with_arviz(tmp_path):
    import arviz as az
    import matplotlib.pyplot as plt

    model = bayeshf.load(TWO_CHANNELS)
    idata = az.from_netcdf(str(saved_posterior(model, tmp_path / "posterior.nc", draws=120)))
    for channel in model.channels:
        counts = idata.posterior_predictive[channel]
        assert counts.dtype.kind == "i" and counts.shape == (2, 120, model.channel_nbins[channel])
        assert idata.observed_data[channel].shape == (model.channel_nbins[channel],)
    # one pointwise log-likelihood per main bin, summing to the model's main Poisson term
    loglik = idata.log_likelihood["main_bins"]
    assert loglik.shape == (2, 120, model.nmain)
    theta = np.concatenate([np.atleast_3d(idata.posterior[p.name].values) if p.size > 1 else
                            idata.posterior[p.name].values[..., None] for p in model.parameters], axis=-1)
    for chain, draw in [(0, 0), (1, 77)]:
        expected = float(model.log_likelihood(theta[chain, draw]))
        assert float(loglik[chain, draw].sum()) == pytest.approx(expected, rel=1e-10)
    loo, waic = az.loo(idata), az.waic(idata)
    assert loo.n_data_points == waic.n_data_points == model.nmain and np.isfinite(loo.elpd_loo)
    assert len(az.compare({"a": idata, "b": idata})) == 2
    summary = az.summary(idata)
    assert set(model.par_names) <= set(summary.index)
    axes = az.plot_ppc(idata, num_pp_samples=20)
    assert np.size(axes) == len(model.channels)
    plt.close("all")


# --- frequentist plots: nothing silently dropped, limits and fits written on them ------------------

SBOTTOM = str(data_path("sbottom/RegionA/BkgOnly.json"))
SBOTTOM_PATCH = str(data_path("sbottom/RegionA/patch.sbottom_1300_205_60.json"))


def _fake_fit(model, seed=0):
    """A FitResult-shaped object (no fit needed to test what a plot shows)."""
    from types import SimpleNamespace

    from bayeshf.impacts import prefit_constraints

    rng = np.random.default_rng(seed)
    centre, width = prefit_constraints(model)
    width = np.where(np.isfinite(width), width, 0.3)
    n = model.npars
    a = rng.normal(size=(n, n)) * (rng.uniform(size=(n, n)) < 0.02)
    cov = a @ a.T + np.eye(n)
    corr = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    return SimpleNamespace(bestfit=centre + width * rng.normal(0, 0.8, n), uncertainties=width * rng.uniform(0.3, 1, n),
                           fixed=np.asarray(model.fixed, dtype=bool), correlation=corr, par_names=tuple(model.par_names),
                           poi_index=model.poi_index)


def test_pulls_show_every_constrained_parameter_or_state_the_cut():
    from bayeshf.impacts import prefit_constraints
    from bayeshf.plots import freq

    model = bayeshf.load(SBOTTOM, patches=[SBOTTOM_PATCH])
    fit = _fake_fit(model)
    _, width = prefit_constraints(model)
    constrained = [model.par_names[i] for i in range(model.npars) if np.isfinite(width[i]) and not model.fixed[i]]
    assert len(constrained) > 60  # more than the old silent cut
    fig = freq.pulls(fit, model)
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert sorted(ticks) == sorted(constrained)
    fig = freq.pulls(fit, model, threshold=1.0)
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    pulls = {n: (fit.bestfit[i] - prefit_constraints(model)[0][i]) / width[i] for i, n in enumerate(model.par_names)}
    assert set(ticks) == {n for n in constrained if abs(pulls[n]) >= 1.0 or
                          fit.uncertainties[model.par_names.index(n)] / width[model.par_names.index(n)] <= 0.0}
    assert "|pull| >= 1" in fig.axes[0].get_title() and f"of {len(constrained)}" in fig.axes[0].get_title()


def test_correlation_matrix_keeps_everything_and_always_the_poi():
    from bayeshf.plots import freq

    model = bayeshf.load(SBOTTOM, patches=[SBOTTOM_PATCH])
    fit = _fake_fit(model, seed=1)
    free = [n for i, n in enumerate(model.par_names) if fit.uncertainties[i] > 0]
    assert model.par_names.index(model.poi_name) >= 50  # the old plot dropped it
    fig = freq.correlation_matrix(fit)
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(ticks) == len(free) and f"{model.poi_name} (POI)" in ticks
    corr = fit.correlation.copy()
    poi = model.poi_index
    corr[poi, :] = corr[:, poi] = 0.0
    corr[poi, poi] = 1.0
    fig = freq.correlation_matrix(type(fit)(**{**vars(fit), "correlation": corr}), threshold=0.5)
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert f"{model.poi_name} (POI)" in ticks and len(ticks) < len(free)
    assert ">= 0.5" in fig.axes[0].get_title()


def test_scan_plot_has_best_fit_and_gaussian_approximation():
    from types import SimpleNamespace

    from bayeshf.plots import freq

    values = np.linspace(0.5, 1.5, 11)
    result = SimpleNamespace(par_name="mu", values=values, delta_twice_nll=((values - 0.9) / 0.2) ** 2 * 1.1,
                             bestfit=0.9, uncertainty=0.2, interval_68=(0.71, 1.09), interval_95=(None, None))
    fig = freq.scan(result, poi_name="mu")
    ax = fig.axes[0]
    labels = ax.get_legend_handles_labels()[1]
    gauss = [line for line in ax.lines if line.get_label().startswith("Gaussian")][0]
    x, y = gauss.get_data()
    np.testing.assert_allclose(y, ((x - 0.9) / 0.2) ** 2)
    assert any(lab.startswith("best fit 0.9") for lab in labels)
    assert any("68% interval [0.71, 1.09]" in lab for lab in labels)
    assert ax.get_xlabel() == "mu (POI)"


def test_brazil_plot_writes_the_limits():
    from bayeshf.limits import CLsScanResult, UpperLimitResult
    from bayeshf.plots import freq

    x = np.linspace(0.1, 3, 20)
    obs = np.exp(-x)
    scan = CLsScanResult(poi_values=x, CLs_obs=obs, CLs_exp=np.stack([np.exp(-x * k) for k in (2, 1.5, 1, 0.8, 0.6)], 1),
                         test_stat="qtilde", level=0.05)
    limit = UpperLimitResult(obs=2.9957, exp=(1.5, 2.0, 2.9957, 3.7, 5.0), level=0.05, test_stat="qtilde", scan=scan)
    fig = freq.brazil(scan, limit=limit, poi_name="mu_SIG")
    text = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "observed 2.996" in text and "expected 2.996" in text and "[1.5, 5]" in text
    assert fig.axes[0].get_xlabel() == "mu_SIG (POI)"


def test_ranking_falls_back_to_hessian_impacts_at_a_bound(tmp_path, capsys):
    spec = json.loads(Path(CORR).read_text())
    spec["observations"][0]["data"] = [45.0, 47.0]  # below the background: mu_hat = 0, on its bound
    path = tmp_path / "low.json"
    path.write_text(json.dumps(spec))
    out = tmp_path / "ranking.png"
    assert main(["ranking", str(path), "--json", "--plot", str(out)]) == 0
    captured = capsys.readouterr()
    assert "sits on its bound" in captured.err and "Hessian impacts" in captured.err
    document = json.loads(captured.out)
    assert document["method"] == "hessian"
    assert any(abs(v) > 1e-3 for v in document["postfit_up"] if v is not None)
    assert out.stat().st_size > 1000


def test_refit_impacts_at_a_bound_warn_in_the_library(tmp_path):
    import warnings

    import bayeshf.infer

    spec = json.loads(Path(CORR).read_text())
    spec["observations"][0]["data"] = [45.0, 47.0]  # below the background: mu_hat = 0, on its bound
    model = bayeshf.load(spec)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = bayeshf.infer.impacts(model, method="refit")
    assert any("sits on its bound" in str(w.message) for w in caught)
    assert np.allclose(np.nan_to_num(result.postfit_up), 0.0)  # what the warning is about
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bayeshf.infer.impacts(bayeshf.load(CORR), method="refit")
    assert not any("sits on its bound" in str(w.message) for w in caught)


def test_corner_marks_the_map_and_titles_fit(tmp_path):
    import arviz as az

    from bayeshf.plots import bayes

    model = bayeshf.load(TWO_CHANNELS)
    idata = az.from_netcdf(str(saved_posterior(model, tmp_path / "posterior.nc")))
    marks = {"mu": 1.05, "coupled_normsys": -0.2}
    fig = bayes.corner(idata, ["mu", "coupled_normsys"], markers=marks)
    n = 2
    titles = [fig.axes[i * n + i].get_title() for i in range(n)]
    assert all(t.startswith("$") and "=" not in t for t in titles)  # numbers only, no name
    red = [line for ax in fig.axes for line in ax.lines if line.get_color() == "tab:red"]
    xs = {round(float(line.get_xdata()[0]), 6) for line in red if len(set(line.get_xdata())) == 1}
    assert {1.05, -0.2} <= xs
    assert any(t.get_text() == "MAP" for leg in fig.legends for t in leg.get_texts())


def test_plot_corner_marks_a_fit_document(tmp_path, capsys):
    import matplotlib.image as mpimg

    from bayeshf.cli.plot import fit_markers

    model = bayeshf.load(TWO_CHANNELS)
    posterior = saved_posterior(model, tmp_path / "posterior.nc")
    pyhf_doc = tmp_path / "pyhf_fit.json"
    pyhf_doc.write_text(json.dumps({"mle_parameters": {"mu": [1.1], "coupled_normsys": [-0.3]}, "twice_nll": 3.0}))
    assert fit_markers(str(pyhf_doc)) == {"mu": 1.1, "coupled_normsys": -0.3}
    ours = tmp_path / "fit.json"
    assert main(["fit", TWO_CHANNELS, "--json", "--output-file", str(ours)]) == 0
    marks = fit_markers(str(ours))
    assert set(marks) == set(model.par_names)
    out = tmp_path / "corner.png"
    assert main(["plot", "corner", str(posterior), "--mark", str(pyhf_doc), "--out", str(out)]) == 0
    assert mpimg.imread(str(out)).shape[0] > 300
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    capsys.readouterr()
    assert main(["plot", "corner", str(posterior), "--mark", str(bad)]) == 2
    assert "not a fit result" in capsys.readouterr().err


def test_ranking_plot_warns_when_every_refit_impact_is_zero():
    from bayeshf.impacts import ImpactsResult
    from bayeshf.plots import freq

    n = 3
    zeros, ones = np.zeros(n), np.ones(n)
    result = ImpactsResult(poi_name="mu", poi_bestfit=0.0, poi_uncertainty=0.5, par_names=("a", "b", "c"),
                           bestfit=zeros, postfit_uncertainty=ones, prefit_centre=zeros, prefit_uncertainty=ones,
                           postfit_up=zeros, postfit_down=zeros, prefit_up=zeros, prefit_down=zeros, method="refit")
    with pytest.warns(UserWarning, match="every refit impact on mu is zero"):
        freq.ranking(result)
    import dataclasses

    moved = dataclasses.replace(result, postfit_up=np.array([0.1, 0.0, 0.0]))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        freq.ranking(moved)


def test_datamc_plain_style_needs_no_mplhep(monkeypatch):
    import sys

    from bayeshf.errors import BayeshfError
    from bayeshf.plots.datamc import data_mc
    from bayeshf.yields import yields

    model = bayeshf.load(CORR)
    result = yields(model)
    monkeypatch.setitem(sys.modules, "mplhep", None)  # as if the [plot] extra were not installed
    fig = data_mc(result, "singlechannel", style="plain")
    heights = [p for p in fig.axes[0].patches if p.get_label() in model.samples]
    assert sorted(p.get_label() for p in heights) == sorted(model.samples)
    with pytest.raises(BayeshfError, match=r"bayeshf\[plot\]"):
        data_mc(result, "singlechannel", style="atlas")
