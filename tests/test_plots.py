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
    assert main(["datamc", CORR, "--fit", "--posterior", str(posterior), "--out", str(out), "--style", "atlas"]) == 0
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
    assert main(["datamc", TWO_CHANNELS, "--max-channels", "1", "--out", str(out)]) == 0
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
        (["--posterior", str(tmp_path / "missing.nc")], "missing.nc: no such file"),
        (["--max-channels", "0"], "--max-channels must be at least 1"),
    ]
    for extra, message in cases:
        assert main(["datamc", CORR, "--out", str(tmp_path / "x"), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(_lines(err)) == 1, err
    with pytest.raises(SystemExit):
        main(["datamc", CORR, "--out", str(tmp_path / "x"), "--style", "lhcb"])
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
