"""``bayeshf sample | priors | plot`` end to end on a small workspace (tiny warm-up and draws)."""

from __future__ import annotations

import json
import shutil

import arviz as az
import numpy as np
import pytest

from bayeshf.cli import main
from tests.conftest import data_path

WORKSPACE = str(data_path("thesis/2_bin_uncorr.json"))


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "run"
    code = main(["sample", WORKSPACE, "--chains", "2", "--warmup", "60", "--draws", "40", "--seed", "3",
                 "--out", str(out), "--quiet", "--target-ess", "0"])
    assert code == 0
    return out


def test_sample_writes_posterior_summary_and_plots(sampled, capsys):
    for name in ("posterior.nc", "summary.json", "corner.png", "ppc.png"):
        assert (sampled / name).stat().st_size > 0, name
    assert not list(sampled.glob(".*.tmp*"))  # atomic writes leave no temporaries
    idata = az.from_netcdf(str(sampled / "posterior.nc"))
    assert idata.posterior["mu"].shape == (2, 40)
    assert idata.posterior["uncorr_bkguncrt"].shape == (2, 40, 2)
    summary = json.loads((sampled / "summary.json").read_text())
    assert set(summary["parameters"]) == {"mu", "uncorr_bkguncrt[0]", "uncorr_bkguncrt[1]"}
    mu = idata.posterior["mu"].values
    assert summary["parameters"]["mu"]["mean"] == pytest.approx(mu.mean())
    assert summary["settings"]["seed"] == 3 and summary["chains"] == 2 and summary["draws"] == 40


def test_the_corner_plot_marks_the_maximum_of_the_posterior(sampled):
    import bayeshf
    from bayeshf.sampling import posterior_for

    idata = az.from_netcdf(str(sampled / "posterior.nc"))
    stored = np.asarray(idata.posterior.attrs["map"], dtype=float)
    names = [str(n) for n in np.atleast_1d(idata.posterior.attrs["par_names"])]
    posterior = posterior_for(bayeshf.load(WORKSPACE))
    assert len(stored) == len(names) == posterior.model.npars
    best = float(posterior.log_posterior(stored))
    # a maximum: no draw and no small step away from it has a higher log posterior
    draws = np.stack([idata.posterior[n.split("[")[0]].values.reshape(-1, 2)[:, int(n[-2])] if "[" in n
                      else idata.posterior[n].values.reshape(-1) for n in names], axis=1)
    assert max(float(posterior.log_posterior(theta)) for theta in draws[:50]) <= best + 1e-9
    for k in range(len(stored)):
        for step in (-1e-3, 1e-3):
            moved = stored.copy()
            moved[k] += step
            assert float(posterior.log_posterior(moved)) <= best + 1e-9


def test_same_seed_reproduces_the_file(sampled, tmp_path):
    out = tmp_path / "again"
    assert main(["sample", WORKSPACE, "--chains", "2", "--warmup", "60", "--draws", "40", "--seed", "3",
                 "--out", str(out), "--quiet", "--no-plots", "--target-ess", "0"]) == 0
    first = az.from_netcdf(str(sampled / "posterior.nc"))
    second = az.from_netcdf(str(out / "posterior.nc"))
    np.testing.assert_array_equal(first.posterior["mu"].values, second.posterior["mu"].values)


def test_summary_table_and_low_ess_warning_are_printed(tmp_path, capsys):
    assert main(["sample", WORKSPACE, "--chains", "2", "--warmup", "60", "--draws", "40", "--out",
                 str(tmp_path / "o"), "--quiet", "--no-plots", "--target-ess", "0"]) == 0
    captured = capsys.readouterr()
    assert "ess_bulk" in captured.out and "r_hat" in captured.out and "uncorr_bkguncrt[1]" in captured.out
    assert "ESS below 200" in captured.err  # 80 draws in total cannot reach 100 per chain
    assert "mu: 95% credible upper limit" in captured.out and "95% HDI" in captured.out


def test_default_target_ess_draws_more_and_records_it(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["sample", WORKSPACE, "--chains", "2", "--warmup", "100", "--draws", "40", "--out", str(out),
                 "--quiet", "--no-plots", "--seed", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["converged"] is True and summary["convergence"]["target_ess"] == 400
    assert summary["draws"] > 40 and summary["settings"]["stop"] == "converged"
    assert min(min(p["ess_bulk"], p["ess_tail"]) for p in summary["parameters"].values()) >= 400
    assert "NOT CONVERGED" not in capsys.readouterr().err
    poi = summary["poi"]
    assert poi["name"] == "mu" and poi["upper_limit_95"] == summary["parameters"]["mu"]["q95"]
    assert poi["hdi_68"][0] <= poi["mode"] <= poi["hdi_68"][1] and "kernel density" in poi["mode_method"]


def test_a_run_that_ends_short_says_so_in_one_line_and_in_summary_json(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["sample", WORKSPACE, "--chains", "2", "--warmup", "60", "--draws", "40", "--out", str(out),
                 "--quiet", "--no-plots", "--target-ess", "100000", "--max-time", "0.001"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "NOT CONVERGED" in line]
    assert len(lines) == 1 and "mu" in lines[0] and "--max-time" in lines[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["converged"] is False and summary["convergence"]["stop"] == "max_time"
    assert "mu" in summary["convergence"]["short"] and summary["draws"] == 40
    assert main(["sample", WORKSPACE, "--max-time", "0", "--out", str(out)]) == 2


@pytest.mark.parametrize("kind", ["corner", "ppc", "trace"])
def test_plot_redraws_from_the_saved_posterior(sampled, tmp_path, kind):
    out = tmp_path / f"{kind}.png"
    assert main(["plot", kind, str(sampled / "posterior.nc"), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_of_a_missing_or_bad_file_is_one_sentence(tmp_path, capsys):
    bad = tmp_path / "bad.nc"
    bad.write_text("not netcdf")
    assert main(["plot", "corner", str(bad)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and str(bad) in errors[0]


def test_bad_priors_file_is_one_sentence(tmp_path, capsys):
    bad = tmp_path / "priors.json"
    bad.write_text(json.dumps({"priors": {"mu": {"family": "normal", "mu": 0, "sigma": 0}}}))
    assert main(["sample", WORKSPACE, "--priors", str(bad), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and str(bad) in errors[0] and "sigma" in errors[0]
    assert not (tmp_path / "o").exists()


def test_unknown_corner_variable_is_one_sentence(sampled, tmp_path, capsys):
    target = tmp_path / "copy.nc"
    shutil.copy(sampled / "posterior.nc", target)
    assert main(["plot", "corner", str(target), "--vars", "nonexistent"]) == 2
    assert "nonexistent" in capsys.readouterr().err


def test_bat_backend_without_julia_is_one_sentence(tmp_path, capsys):
    from bayeshf.julia.environment import find_julia

    if find_julia() is not None:  # pragma: no cover - machines with Julia
        pytest.skip("Julia is installed here; the bridge tests cover it")
    assert main(["sample", WORKSPACE, "--backend", "bat", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "Julia" in errors[0]


def test_priors_command_json(capsys):
    assert main(["priors", WORKSPACE, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    families = {row["name"]: row["family"] for row in document["priors"]}
    assert families == {"mu": "uniform", "uncorr_bkguncrt[0]": "gamma", "uncorr_bkguncrt[1]": "gamma"}


def test_limit_method_bayesian_prints_the_credible_upper_limit_beside_the_cls_one(tmp_path, capsys):
    assert main(["limit", WORKSPACE, "--json"]) == 0
    cls_only = json.loads(capsys.readouterr().out)
    assert "bayesian" not in cls_only  # CLs stays the default
    assert main(["limit", WORKSPACE, "--method", "bayesian", "--seed", "1"]) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["obs"] == pytest.approx(cls_only["obs"])
    bayes = document["bayesian"]
    assert bayes["credibility"] == pytest.approx(0.95) and bayes["converged"] is True
    assert "credible upper limit" in captured.err and "CLs" in captured.err
    # the same number bayeshf sample reports for the same seed
    assert main(["sample", WORKSPACE, "--seed", "1", "--out", str(tmp_path / "s"), "--quiet", "--no-plots"]) == 0
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert bayes["upper_limit"] == pytest.approx(summary["poi"]["upper_limit_95"], rel=1e-12)
