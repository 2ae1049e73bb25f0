"""Batched fits (bayeshf.batchfit) against the single-fit path, and toy-based CLs against pyhf's ToyCalculator."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats

import bayeshf
from bayeshf import batchfit, toys
from bayeshf.errors import BayeshfError
from bayeshf.fit import fit
from bayeshf.teststats import hypotest as asymptotic_hypotest

from conftest import DATA

SBOTTOM = DATA / "sbottom" / "RegionA"
SBOTTOM_PATCHES = ["patch.sbottom_1300_205_60.json", "patch.sbottom_1400_950_60.json",
                   "patch.sbottom_900_630_500.json"]


def _sbottom(patch):
    return bayeshf.load(SBOTTOM / "BkgOnly.json", patches=[SBOTTOM / patch])


def test_batched_fits_of_stacked_models_equal_single_fits():
    models = [_sbottom(p) for p in SBOTTOM_PATCHES]
    m = models[0]
    stacked = batchfit.stack_models(models + models)
    free_mask, free_values, lo, hi = batchfit.fit_setup(m)
    fixed_mask, fixed_values, _, _ = batchfit.fit_setup(m, 1.0)
    n = len(models)
    result = batchfit.batch_minimize(
        m, np.tile(m.init, (2 * n, 1)), None,
        np.array([free_mask] * n + [fixed_mask] * n), np.array([free_values] * n + [fixed_values] * n),
        lo, hi, arrays=stacked)
    assert result.converged.all()
    for i, model in enumerate(models):
        free = fit(model)
        fixed = fit(model, fixed={model.poi_name: 1.0})
        assert result.twice_nll[i] == pytest.approx(free.twice_nll, abs=1e-8)
        assert result.twice_nll[n + i] == pytest.approx(fixed.twice_nll, abs=1e-8)
        np.testing.assert_allclose(result.bestfit[i], free.bestfit, atol=2e-4)
        np.testing.assert_allclose(result.bestfit[n + i], fixed.bestfit, atol=2e-4)
        assert result.bestfit[n + i, model.poi_index] == 1.0


@pytest.mark.parametrize("method", ["newton", "quasi-newton"])
@pytest.mark.parametrize("name", ["pyhf-validation/1bin_shapesys.json", "thesis/2_bin_corr.json"])
def test_batched_fits_of_toy_data_equal_single_fits_and_honour_bounds(name, method):
    model = bayeshf.load(DATA / name)
    background = fit(model, fixed={model.poi_name: 0.0})
    data = toys.sample_toys(model, background.bestfit, 12, np.random.default_rng(3))
    mask, values, lo, hi = batchfit.fit_setup(model)
    result = batchfit.batch_minimize(model, np.tile(model.init, (12, 1)), data, mask, values, lo, hi, method=method)
    assert result.converged.all()
    assert np.all(result.bestfit >= lo) and np.all(result.bestfit <= hi)
    at_floor = 0
    for i in range(12):
        single = fit(model, data=data[i])
        assert result.twice_nll[i] == pytest.approx(single.twice_nll, abs=1e-8)
        np.testing.assert_allclose(result.bestfit[i], single.bestfit, atol=2e-4)
        at_floor += single.bestfit[model.poi_index] == lo[model.poi_index]
    assert at_floor > 0  # b-only toys: some fits end on the POI's lower bound, and the batch agrees there


def _single_fit_minima(model, data, poi_value):
    free = fit(model, data=data)
    fixed = fit(model, data=data, fixed={model.poi_name: poi_value}, init=free.bestfit)
    assert free.success and fixed.success
    return free.twice_nll, fixed.twice_nll


def test_toy_minima_equal_single_fits_on_a_one_valley_model():
    model = bayeshf.load(DATA / "thesis" / "2_bin_corr.json")
    for generating in (1.0, 0.0):  # s+b and b toys: the latter put many free fits on the POI's bound
        at = fit(model, fixed={model.poi_name: generating}).bestfit
        data = toys.sample_toys(model, at, 10, np.random.default_rng(21))
        minima = toys.toy_minima(model, 1.0, data, at)
        assert minima.converged.all()
        for i in range(len(data)):
            free, fixed = _single_fit_minima(model, data[i], 1.0)
            assert minima.free_nll[i] == pytest.approx(free, abs=1e-6)
            assert minima.fixed_nll[i] == pytest.approx(fixed, abs=1e-6)


def test_sbottom_toy_minima_equal_single_fits_or_are_exact_local_minima():
    """sbottom's toy likelihoods can have two valleys (about 3% of toys: BFGS from two starts and the single
    fit from its own start then end in different ones, either lower); every other toy agrees to 1e-6, and a
    toy's minimum is always a true one: exact Newton steps from it stay there (EDM of the exact Hessian)."""
    model = _sbottom(SBOTTOM_PATCHES[0])
    poi = model.poi_index
    at = fit(model, fixed={model.poi_name: 1.0}).bestfit
    data = toys.sample_toys(model, at, 16, np.random.default_rng(8))
    minima = toys.toy_minima(model, 1.0, data, at)
    assert minima.converged.all()
    free_mask, free_values, lo, hi = batchfit.fit_setup(model)
    fixed_mask, fixed_values, _, _ = batchfit.fit_setup(model, 1.0)
    newton = batchfit.batch_minimize(model, np.concatenate([minima.free_x, minima.fixed_x]),
                                     np.concatenate([data, data]), np.array([free_mask] * 16 + [fixed_mask] * 16),
                                     np.array([free_values] * 16 + [fixed_values] * 16), lo, hi, maxiter=3)
    assert newton.converged.all()
    np.testing.assert_allclose(newton.twice_nll, np.concatenate([minima.free_nll, minima.fixed_nll]), atol=1e-8)
    agree = 0
    for i in range(16):
        free, fixed = _single_fit_minima(model, data[i], 1.0)
        agree += abs(minima.free_nll[i] - free) < 1e-6 and abs(minima.fixed_nll[i] - fixed) < 1e-6
    assert agree >= 14
    assert np.all(minima.fixed_x[:, poi] == 1.0)


def test_an_iteration_budget_too_small_is_flagged_not_converged():
    model = bayeshf.load(DATA / "thesis" / "2_bin_corr.json")
    mask, values, lo, hi = batchfit.fit_setup(model)
    start = np.tile(model.init, (2, 1))
    start[:, model.poi_index] = [3.0, 5.0]
    result = batchfit.batch_minimize(model, start, None, mask, values, lo, hi, maxiter=2)
    assert not result.converged.any() and result.n_failed == 2
    assert np.all(result.edm > 1e-10)


def _binomial_z(p1, n1, p2, n2):
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    se = np.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / n1 + 1 / n2))
    return abs(p1 - p2) / se


@pytest.mark.parametrize("name", ["pyhf-validation/1bin_shapesys.json", "thesis/2_bin_corr.json"])
def test_toys_agree_with_pyhf_toycalculator_within_monte_carlo_error(name):
    import pyhf

    pyhf.set_backend("numpy")
    spec = json.loads((DATA / name).read_text())
    ws = pyhf.Workspace(spec)
    pdf = ws.model()
    data = ws.data(pdf)
    np.random.seed(11)
    calc = pyhf.infer.utils.create_calculator("toybased", data, pdf, ntoys=150, track_progress=False)
    q_obs_pyhf = float(calc.teststatistic(1.0))
    sb, b = calc.distributions(1.0)
    clsb_pyhf, clb_pyhf, _ = (float(v) for v in calc.pvalues(q_obs_pyhf, sb, b))

    model = bayeshf.load(DATA / name)
    result = toys.hypotest(model, 1.0, ntoys=2000, seed=5)
    assert result.n_failed == 0
    assert result.q_obs == pytest.approx(q_obs_pyhf, rel=1e-5, abs=1e-8)
    # the tail probabilities are binomial proportions of two independent samples
    assert _binomial_z(result.CLsb_obs, 2000, clsb_pyhf, 150) < 4.0
    assert _binomial_z(result.CLb_obs, 2000, clb_pyhf, 150) < 4.0
    # and the test statistic's distributions are the same (two-sample Kolmogorov-Smirnov)
    assert scipy.stats.ks_2samp(result.q_sb, np.asarray(sb.samples)).pvalue > 1e-3
    assert scipy.stats.ks_2samp(result.q_b, np.asarray(b.samples)).pvalue > 1e-3
    # the expected band is ordered as pyhf's (-2 ... +2 sigma percentiles of CLs)
    assert list(result.CLs_exp) == sorted(result.CLs_exp)


def test_toys_agree_with_asymptotics_at_high_counts():
    from bayeshf.generators import nbin_workspace

    spec = nbin_workspace(1, signal=[60.0], background=[2000.0], uncertainty=[20.0], observed=[2030.0])
    model = bayeshf.load(spec)
    toy = toys.hypotest(model, 1.0, ntoys=2000, seed=2)
    asym = asymptotic_hypotest(model, 1.0)
    assert toy.n_failed == 0
    assert _binomial_z(toy.CLsb_obs, 2000, asym.CLsb_obs, 10**9) < 4.0
    assert _binomial_z(toy.CLb_obs, 2000, asym.CLb_obs, 10**9) < 4.0
    median = toy.CLs_exp[2]
    assert abs(median - asym.CLs_exp[2]) < 0.05  # the median's Monte Carlo spread here is about 0.01


def test_toys_are_deterministic_by_seed():
    model = bayeshf.load(DATA / "thesis" / "2_bin_corr.json")
    a = toys.hypotest(model, 1.0, ntoys=64, seed=7)
    b = toys.hypotest(model, 1.0, ntoys=64, seed=7)
    c = toys.hypotest(model, 1.0, ntoys=64, seed=8)
    np.testing.assert_array_equal(a.q_sb, b.q_sb)
    np.testing.assert_array_equal(a.q_b, b.q_b)
    assert a.CLs_obs == b.CLs_obs
    assert not np.array_equal(a.q_sb, c.q_sb)


def test_chunks_do_not_change_the_toys():
    model = bayeshf.load(DATA / "thesis" / "2_bin_corr.json")
    whole = toys.hypotest(model, 1.0, ntoys=40, seed=1)
    pieces = toys.hypotest(model, 1.0, ntoys=40, seed=1, chunk=16)
    np.testing.assert_allclose(pieces.q_sb, whole.q_sb, atol=1e-8)
    np.testing.assert_allclose(pieces.q_b, whole.q_b, atol=1e-8)


def test_toys_split_over_two_cpu_devices_are_the_same_toys():
    """The command line makes one CPU device per core and batchfit splits each batch over them."""
    script = ("import json, sys, bayeshf; bayeshf.runtime.configure(cpu_devices=2, compilation_cache=False); "
              "import jax; from bayeshf import toys; "
              f"m = bayeshf.load({str(DATA / 'thesis' / '2_bin_corr.json')!r}); "
              "r = toys.hypotest(m, 1.0, ntoys=150, seed=6, chunk=256); "
              "print(json.dumps([len(jax.devices('cpu')), r.q_sb.tolist(), r.q_b.tolist()]))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    devices, q_sb, q_b = json.loads(done.stdout.strip().splitlines()[-1])
    assert devices == 2
    here = toys.hypotest(bayeshf.load(DATA / "thesis" / "2_bin_corr.json"), 1.0, ntoys=150, seed=6, chunk=256)
    np.testing.assert_allclose(q_sb, here.q_sb, atol=1e-8)
    np.testing.assert_allclose(q_b, here.q_b, atol=1e-8)


@pytest.mark.parametrize("ntoys, test_stat", [(0, "qtilde"), (-5, "qtilde"), (10, "q0")])
def test_bad_toy_requests_are_one_sentence(ntoys, test_stat):
    model = bayeshf.load(DATA / "thesis" / "2_bin_corr.json")
    with pytest.raises(BayeshfError) as info:
        toys.hypotest(model, 1.0 if test_stat != "q0" else 0.0, ntoys=ntoys, test_stat=test_stat)
    assert "\n" not in str(info.value)


def test_infer_hypotest_dispatches_toybased():
    from bayeshf import infer

    model = bayeshf.load(DATA / "thesis" / "2_bin_corr.json")
    result = infer.hypotest(model, 1.0, calctype="toybased", ntoys=32, seed=4)
    assert result.calctype == "toybased" and result.ntoys == 32
    np.testing.assert_array_equal(result.q_sb, toys.hypotest(model, 1.0, ntoys=32, seed=4).q_sb)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "bayeshf", *args], capture_output=True, text=True, timeout=300)


def test_cli_toybased_and_its_bad_input():
    ws = str(DATA / "thesis" / "2_bin_corr.json")
    done = _cli("cls", ws, "--calctype", "toybased", "--ntoys", "50", "--seed", "3", "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    model = bayeshf.load(DATA / "thesis" / "2_bin_corr.json")
    expected = toys.hypotest(model, 1.0, ntoys=50, seed=3)
    assert document["CLs_obs"] == pytest.approx(expected.CLs_obs, rel=1e-12)
    assert document["calctype"] == "toybased" and document["failed_toys"] == 0
    for bad in (["--ntoys", "0"], ["--ntoys", "-3"], ["--test-stat", "q0", "--poi-value", "0"]):
        done = _cli("cls", ws, "--calctype", "toybased", *bad)
        assert done.returncode == 2
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_toy_upper_limit_is_where_toy_cls_crosses_the_level():
    model = bayeshf.load(DATA / "thesis" / "2_bin_corr.json")
    result = toys.upper_limit(model, ntoys=400, seed=1, scan=np.linspace(0.2, 3.0, 8))
    assert list(result.exp) == sorted(result.exp) and result.n_failed == 0
    # fresh toys (another seed) at the observed limit: CLs there is the level within Monte Carlo error
    check = toys.hypotest(model, result.obs, ntoys=1500, seed=99)
    assert abs(check.CLs_obs - 0.05) < 4 * np.sqrt(0.05 * 0.95 / 400) + 0.02  # toy noise of the scan + linear interpolation
    from bayeshf.infer import upper_limit as asymptotic_limit

    asym = asymptotic_limit(model)
    assert abs(result.exp[2] - asym.exp[2]) < 0.25 * asym.exp[2]  # moderate counts: toys near the asymptotic answer
    with pytest.raises(BayeshfError):
        toys.upper_limit(model, ntoys=10, scan=[1.0])


def _two_valley_toy_spec(seed):
    """Two bins; background histosys 'shape' with both templates above the nominal (non-monotone) and
    'gen' one-sided (down = nominal: code4p dips between alpha = -1 and 0): toys' likelihoods often have two valleys."""
    rng = np.random.default_rng(seed)
    nominal = [100.0, 80.0]
    up = [nominal[0] + rng.uniform(8, 14), nominal[1] + rng.uniform(4, 8)]
    down = [nominal[0] + rng.uniform(3, 7), nominal[1] + rng.uniform(1, 4)]
    return {"channels": [{"name": "SR", "samples": [
        {"name": "signal", "data": [6.0, 12.0], "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
        {"name": "bkg", "data": nominal, "modifiers": [
            {"name": "shape", "type": "histosys", "data": {"hi_data": up, "lo_data": down}},
            {"name": "gen", "type": "histosys", "data": {"hi_data": [nominal[0] - 9.0, nominal[1] + 6.0],
                                                         "lo_data": nominal}}]}]}],
        "observations": [{"name": "SR", "data": [110.0, 95.0]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": [{"name": "mu", "bounds": [[0.0, 10.0]]}]}}],
        "version": "1.0.0"}


@pytest.mark.parametrize("seed", [0, 2])
def test_toy_minima_reach_the_lower_valley_of_generated_two_valley_models(seed):
    """Every toy minimum (free and fixed-POI) is at or below the lowest of local fits from all four sign
    combinations of the two valley-making parameters, started at the toy's own minimum. With two starts
    and no mirror probe, 1-2 of the 128 fits per model ended in the upper valley."""
    import bayeshf.fit  # the module: bayeshf.fit is also the function's name in the package namespace

    fitmod = sys.modules["bayeshf.fit"]
    model = bayeshf.load(_two_valley_toy_spec(seed))
    valleys = [model.par_names.index("gen"), model.par_names.index("shape")]
    assert sorted(toys.several_valley_parameters(model)) == sorted(valleys)  # one-sided 'gen' is flagged too
    at = fit(model, fixed={"mu": 1.0}).bestfit
    data = toys.sample_toys(model, at, 64, np.random.default_rng(seed))
    minima = toys.toy_minima(model, 1.0, data, at)
    assert minima.converged.all()
    two_valleys = 0
    for i in range(len(data)):
        for fixed, nll, x in ((None, minima.free_nll[i], minima.free_x[i]),
                              ({"mu": 1.0}, minima.fixed_nll[i], minima.fixed_x[i])):
            problem = fitmod.FitProblem.resolve(model, data=data[i], fixed=fixed)
            local = []
            for signs in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                start = np.array(x)
                start[valleys] = signs
                result = fitmod.solve(problem, start, final_hessian=False)
                if result.success:
                    local.append(result.twice_nll)
            assert local
            two_valleys += max(local) - min(local) > 1e-3
            assert nll <= min(local) + 1e-6
    assert two_valleys >= 5  # the models do have two valleys on many toys: the check is not vacuous


def test_stopping_test_follows_the_round_off_of_large_counts_and_leaves_small_ones_alone():
    """BFGS's EDM tolerance is raised to a tenth of twice_nll's round-off scale (ATLAS ttbar's 6.7M events);
    on sbottom's toys that scale is far below 1e-10, so their fits are unchanged, and on a model with
    ~1e6 events per bin the batched minima still equal single fits."""
    from bayeshf.generators import nbin_workspace

    sbottom = _sbottom(SBOTTOM_PATCHES[0])
    at = fit(sbottom, fixed={sbottom.poi_name: 1.0}).bestfit
    small = toys.sample_toys(sbottom, at, 64, np.random.default_rng(3))[:, :sbottom.nmain]
    assert np.all(batchfit._FLOOR_FRACTION * batchfit.roundoff_floor(small) < 1e-12)
    rng = np.random.default_rng(0)
    background = rng.uniform(2e5, 1e6, 6)
    model = bayeshf.load(nbin_workspace(6, signal=list(0.05 * background), background=list(background),
                                        uncertainty=list(0.02 * background), observed=list(np.round(1.01 * background))))
    data = toys.sample_toys(model, fit(model, fixed={model.poi_name: 1.0}).bestfit, 8, np.random.default_rng(1))
    assert np.all(batchfit.roundoff_floor(data[:, :model.nmain]) > 1e-9)  # the raised tolerance applies here
    mask, values, lo, hi = batchfit.fit_setup(model)
    result = batchfit.batch_minimize(model, np.tile(model.init, (8, 1)), data, mask, values, lo, hi,
                                     method="quasi-newton", maxiter=200)
    assert result.converged.all()
    for i in range(8):
        assert result.twice_nll[i] == pytest.approx(fit(model, data=data[i]).twice_nll, abs=1e-6)
