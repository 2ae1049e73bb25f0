"""The frequentist commands: output shapes, agreement with the Python API, plots, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

import bayeshf
import bayeshf.infer as infer
from bayeshf.cli import main

from conftest import data_path

SMALL = str(data_path("pyhf-validation/2bin_2channel_couplednorm.json"))
SBOTTOM = [str(data_path("sbottom/RegionA/BkgOnly.json")), "--patch",
           str(data_path("sbottom/RegionA/patch.sbottom_1300_205_60.json"))]


def _json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_fit_json_and_plots(capsys, tmp_path):
    pulls, corr = tmp_path / "pulls.png", tmp_path / "corr.png"
    out = _json(capsys, ["fit", SMALL, "--json", "--plot", str(pulls), "--correlation-plot", str(corr)])
    result = bayeshf.fit(bayeshf.load(SMALL))
    assert out["par_names"] == list(result.par_names)
    np.testing.assert_allclose(out["bestfit"], result.bestfit, atol=1e-10)
    np.testing.assert_allclose(out["twice_nll"], result.twice_nll, rtol=1e-12)
    assert out["success"] is True
    assert pulls.stat().st_size > 1000 and corr.stat().st_size > 1000
    # the table form names every parameter
    assert main(["fit", SMALL, "--fix", f"{result.par_names[0]}=1.5"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in result.par_names) and "(fixed)" in text


def test_cls_prints_pyhf_shaped_json(capsys, tmp_path):
    brazil = tmp_path / "cls.png"
    out = _json(capsys, ["cls", *SBOTTOM, "--poi-value", "1.0", "--plot", str(brazil)])
    assert set(out) == {"CLs_obs", "CLs_exp"} and len(out["CLs_exp"]) == 5
    reference = infer.hypotest(bayeshf.load(SBOTTOM[0], patches=[SBOTTOM[2]]), 1.0)
    np.testing.assert_allclose(out["CLs_obs"], reference.CLs_obs, rtol=1e-9)
    np.testing.assert_allclose(out["CLs_exp"], reference.CLs_exp, rtol=1e-9)
    assert brazil.stat().st_size > 1000
    # --mu is an alias, and the q statistic differs from qtilde
    q = _json(capsys, ["cls", *SBOTTOM, "--mu", "1.0", "--test-stat", "q", "--json"])
    assert q["test_stat"] == "q" and q["CLs_obs"] != out["CLs_obs"]
    # the spelling `--poi 1.0` (a number, not a parameter name) is the tested value too
    half = _json(capsys, ["cls", *SBOTTOM, "--poi", "0.5", "--json"])
    assert half["poi_value"] == 0.5
    np.testing.assert_allclose(half["CLs_obs"], infer.hypotest(bayeshf.load(SBOTTOM[0], patches=[SBOTTOM[2]]),
                                                               0.5).CLs_obs, rtol=1e-9)


def test_limit_json(capsys, tmp_path):
    brazil = tmp_path / "brazil.png"
    out = _json(capsys, ["limit", SMALL, "--plot", str(brazil)])
    assert set(out) == {"obs", "exp"} and len(out["exp"]) == 5
    reference = infer.upper_limit(bayeshf.load(SMALL))
    np.testing.assert_allclose(out["obs"], reference.obs, rtol=1e-8)
    np.testing.assert_allclose(out["exp"], reference.exp, rtol=1e-8)
    assert brazil.stat().st_size > 1000
    verbose = _json(capsys, ["limit", SMALL, "--json"])
    assert verbose["level"] == 0.05 and len(verbose["scan"]["poi_values"]) > 0


def test_scan_ranking_significance(capsys, tmp_path):
    model = bayeshf.load(SMALL)
    out = _json(capsys, ["scan", SMALL, "--json", "--points", "5", "--plot", str(tmp_path / "scan.png")])
    assert out["par_name"] == model.poi_name and len(out["values"]) == 5
    assert min(out["delta_twice_nll"]) > -1e-8
    other = model.par_names[1] if model.poi_index == 0 else model.par_names[0]
    out2 = _json(capsys, ["scan", SMALL, "--json", "--par2", other, "--points", "3",
                          "--plot", str(tmp_path / "scan2.png")])
    assert np.asarray(out2["delta_twice_nll"]).shape == (3, 3)
    ranking = _json(capsys, ["ranking", SMALL, "--json", "--method", "hessian", "--plot", str(tmp_path / "rank.png")])
    assert model.poi_name not in ranking["par_names"] and "grouped" in ranking
    significance = _json(capsys, ["significance", SMALL, "--json", "--plot", str(tmp_path / "sig.png")])
    np.testing.assert_allclose(significance["p0_obs"], infer.significance(model).p0_obs, rtol=1e-9)
    for name in ("scan.png", "scan2.png", "rank.png", "sig.png"):
        assert (tmp_path / name).stat().st_size > 1000


@pytest.mark.parametrize("argv,message", [
    (["cls", SBOTTOM[0], "--poi-value", "1"], "no parameter of interest"),
    (["fit", SMALL, "--fix", "nope=1"], "no parameter named"),
    (["fit", SMALL, "--fix", "garbage"], "NAME=VALUE"),
    (["scan", SMALL, "--points", "1"], "--points"),
])
def test_bad_input_exits_2_with_one_sentence(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
