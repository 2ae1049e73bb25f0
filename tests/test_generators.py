"""Generators: the thesis n-bin model and the large synthetic model (oracles: the thesis file, pyhf, closed forms)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyhf
import pytest

import bayeshf
from bayeshf.generators import nbin_workspace, synthetic_arrays, synthetic_workspace

DATA = Path(__file__).parent / "data"


def pyhf_model(spec, **settings):
    pyhf.set_backend("numpy")
    workspace = pyhf.Workspace(spec)
    model = workspace.model(**settings)
    return workspace, model


def random_points(model, n, seed):
    """Points inside pyhf's suggested bounds (histosys within +-2, factors within [0.5, 2])."""
    rng = np.random.default_rng(seed)
    init = np.asarray(model.config.suggested_init(), dtype=float)
    points = []
    for _ in range(n):
        point = init + rng.uniform(-0.5, 0.5, size=init.shape) * np.where(init == 0.0, 4.0, init)
        points.append(point)
    return points


def test_nbin_2_is_the_thesis_workspace():
    assert nbin_workspace(2) == json.loads((DATA / "thesis" / "2_bin_uncorr.json").read_text())


@pytest.mark.parametrize("n", [1, 3, 50])
def test_nbin_structure_and_parity_with_pyhf(n):
    spec = nbin_workspace(n)
    workspace, reference = pyhf_model(spec)
    assert reference.config.npars == n + 1
    assert reference.config.poi_name == "mu"
    assert reference.config.par_names[0] == "mu" and reference.config.par_names[1] == "uncorr_bkguncrt[0]"
    # the pattern of the thesis' two-bin model, tiled
    background = np.resize([50.0, 60.0], n)
    assert reference.expected_actualdata(reference.config.suggested_init()) == pytest.approx(
        background + np.resize([5.0, 10.0], n), rel=1e-12)
    assert workspace.data(reference, include_auxdata=False) == pytest.approx(background)
    model = bayeshf.load(spec)
    data = workspace.data(reference)
    for point in random_points(reference, 3, seed=n):
        assert float(model.logpdf(point)) == pytest.approx(float(reference.logpdf(point, data)[0]), rel=1e-10)


def test_nbin_custom_values_and_bad_n():
    spec = nbin_workspace(3, signal=1.0, background=[10.0, 20.0, 30.0], uncertainty=2.0, observed=[9, 21, 33])
    samples = {s["name"]: s for s in spec["channels"][0]["samples"]}
    assert samples["signal"]["data"] == [1.0, 1.0, 1.0]
    assert samples["background"]["modifiers"][0]["data"] == [2.0, 2.0, 2.0]
    assert spec["observations"][0]["data"] == [9.0, 21.0, 33.0]
    with pytest.raises(ValueError):
        nbin_workspace(0)
    with pytest.raises(ValueError):
        nbin_workspace(2, signal=[])


def test_synthetic_templates_follow_the_closed_form():
    arrays = synthetic_arrays(40, 7, seed=3, yield_per_bin=50.0)
    S, K, B = 5, 7, 40
    assert arrays.nominal.shape == (S, B) and arrays.histosys_up.shape == (K, S, B) == arrays.histosys_down.shape
    assert arrays.sample_names[arrays.signal_index] == "signal"
    assert arrays.nominal == pytest.approx(np.full((S, B), 10.0))  # 20% of 50 in every bin
    x = (np.arange(B) + 0.5) / B
    w = 1.0 + arrays.delta[:, :, None] * np.sin(2 * np.pi * (arrays.frequency[:, :, None] * x + arrays.phase[:, :, None]))
    assert arrays.histosys_up == pytest.approx(arrays.nominal[None] * w, rel=1e-12)
    assert arrays.histosys_down == pytest.approx(arrays.nominal[None] * (2.0 - w), rel=1e-12)
    assert np.all(np.abs(arrays.delta) <= 0.1)
    assert np.all((arrays.phase >= 0) & (arrays.phase < 1))
    assert np.all((arrays.frequency >= 0.25) & (arrays.frequency <= B))
    assert np.all(arrays.observed == np.round(arrays.observed)) and np.all(arrays.observed >= 0)


def test_synthetic_parameter_distributions():
    """delta ~ N(0, 0.02) clipped at 0.1 (5 sigma: clipping is negligible), f ~ U(1/4, B), phase ~ U(0, 1)."""
    arrays = synthetic_arrays(8, 2000, seed=11)
    delta, f, phase = arrays.delta.ravel(), arrays.frequency.ravel(), arrays.phase.ravel()
    n = delta.size  # 10,000 draws; tolerances are 5 standard errors
    assert abs(delta.mean()) < 5 * 0.02 / np.sqrt(n)
    assert abs(delta.std() - 0.02) < 5 * 0.02 / np.sqrt(2 * n)
    width = 8 - 0.25
    assert abs(f.mean() - (0.25 + 8) / 2) < 5 * width / np.sqrt(12 * n)
    assert abs(phase.mean() - 0.5) < 5 / np.sqrt(12 * n)
    assert abs(arrays.mu_true - 1.0) <= 0.5
    assert abs(arrays.theta_true.std() - 1.0) < 5 / np.sqrt(2 * 2000)


def test_synthetic_pseudo_data_are_poisson_around_pyhf_code0_expectation():
    arrays = synthetic_arrays(400, 6, seed=5)
    _, reference = pyhf_model(arrays.to_workspace(), modifier_settings={
        "histosys": {"interpcode": "code0"}, "normsys": {"interpcode": "code1"}})
    truth = {"mu": arrays.mu_true, **dict(zip(arrays.systematic_names, arrays.theta_true))}
    pars = np.asarray([truth[name] for name in reference.config.par_names])
    expected = np.asarray(reference.expected_actualdata(pars))
    # chi2 with B degrees of freedom: mean B, sd sqrt(2B) (Poisson means ~100: the normal limit holds)
    chi2 = np.sum((arrays.observed - expected) ** 2 / expected)
    assert abs(chi2 - 400) < 5 * np.sqrt(2 * 400)


def test_synthetic_seed_reproducibility():
    a, b, c = synthetic_arrays(20, 3, seed=1), synthetic_arrays(20, 3, seed=1), synthetic_arrays(20, 3, seed=2)
    assert np.array_equal(a.histosys_up, b.histosys_up) and np.array_equal(a.observed, b.observed)
    assert not np.array_equal(a.histosys_up, c.histosys_up)
    assert synthetic_workspace(20, 3, seed=1) == a.to_workspace()


def test_synthetic_array_path_equals_workspace_path_and_pyhf():
    arrays = synthetic_arrays(30, 5, seed=4)
    spec = arrays.to_workspace()
    workspace, reference = pyhf_model(spec)
    from_json = bayeshf.load(spec)
    from_arrays = bayeshf.HistFactoryModel.from_arrays(arrays)
    assert list(from_arrays.par_names) == list(from_json.par_names) == list(reference.config.par_names)
    np.testing.assert_allclose(np.asarray(from_arrays.observed), arrays.observed)
    data = workspace.data(reference)
    for point in random_points(reference, 4, seed=9):
        expected = float(reference.logpdf(point, data)[0])
        assert float(from_json.logpdf(point)) == pytest.approx(expected, rel=1e-10)
        assert float(from_arrays.logpdf(point)) == pytest.approx(expected, rel=1e-10)
