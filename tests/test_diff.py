"""bayeshf.diff: yields as traced inputs, differentiable test statistics and limits, soft histograms.

Every gradient is checked against finite differences of the same quantity
computed by the ordinary path (bayeshf.infer on a model with the shifted
yields), and model.with_yields against a model built from a JSON whose
sample data were changed.
"""

from __future__ import annotations

import copy
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayeshf
import bayeshf.diff as diff
import bayeshf.infer as infer
from bayeshf.model import HistFactoryModel

SBOTTOM = "tests/data/sbottom/RegionA"
MODELS = {
    "2_bin_uncorr": ("tests/data/thesis/2_bin_uncorr.json", None),
    "4_bin": ("tests/data/thesis/4_bin.json", None),
    "2_bin_corr": ("tests/data/thesis/2_bin_corr.json", None),
    "sbottom": (f"{SBOTTOM}/BkgOnly.json", [f"{SBOTTOM}/patch.sbottom_1300_205_60.json"]),
    "1bin_shapesys": ("tests/data/pyhf-validation/1bin_shapesys.json", None),
    "coupledhisto": ("tests/data/pyhf-validation/2bin_2channel_coupledhisto.json", None),
    "ttbar": ("tests/data/atlas-examples/ttbar_ljets_xsec_inclusive_pruned.json", None),
}
_CACHE: dict[str, HistFactoryModel] = {}


def load(name):
    if name not in _CACHE:
        path, patches = MODELS[name]
        _CACHE[name] = bayeshf.load(path, patches=patches)
    return _CACHE[name]


def spec_with_yields(model, yields):
    """The model's spec with the samples' data replaced: what with_yields must reproduce."""
    spec = copy.deepcopy(dict(model.spec))
    for channel in spec["channels"]:
        sl = model.channel_slices[channel["name"]]
        for sample in channel["samples"]:
            if sample["name"] in yields:
                sample["data"] = [float(v) for v in np.asarray(yields[sample["name"]])[sl]]
    return spec


def rebuilt(model, yields):
    measurement = next(m for m in model.spec["measurements"] if m["name"] == model.measurement)
    return HistFactoryModel.from_spec(spec_with_yields(model, yields), measurement=measurement, codes=model.codes,
                                      poi_name=model.poi_name)


def direction(model, seed=0, samples=None):
    """A random direction in yield space, each bin scaled by its yield (keeps yields positive)."""
    rng = np.random.default_rng(seed)
    y0 = model.sample_yields()
    return {k: rng.normal(size=v.shape) * v for k, v in y0.items() if samples is None or k in samples}


def shifted(model, v, eps):
    y0 = model.sample_yields()
    return {k: y0[k] + eps * v[k] for k in v}


def fd(model, v, reference, h=1e-3):
    """Five-point central difference of reference(model with yields y0 + eps v) at eps = 0."""
    f = {e: reference(model.with_yields(shifted(model, v, e * h))) for e in (-2, -1, 1, 2)}
    return (f[-2] - 8 * f[-1] + 8 * f[1] - f[2]) / (12 * h)


def directional(grad, v):
    return sum(float(jnp.vdot(grad[k], v[k])) for k in v)


# -- yields as inputs ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["2_bin_uncorr", "4_bin", "sbottom", "1bin_shapesys", "coupledhisto"])
def test_with_yields_equals_a_changed_json(name):
    model = load(name)
    rng = np.random.default_rng(1)
    yields = {k: v * rng.uniform(0.6, 1.4, v.shape) for k, v in model.sample_yields().items()}
    changed, reference = model.with_yields(yields), rebuilt(model, yields)
    np.testing.assert_allclose(changed.auxdata, reference.auxdata, rtol=1e-13)
    assert not np.allclose(changed.expected_counts(model.init), model.expected_counts(model.init))
    for _ in range(4):
        pars = np.clip(model.init + rng.normal(0, 0.2, model.npars), model.bounds[:, 0] + 1e-3, model.bounds[:, 1])
        np.testing.assert_allclose(changed.expected_counts(pars), reference.expected_counts(pars), rtol=1e-13)
        np.testing.assert_allclose(float(changed.logpdf(pars)), float(reference.logpdf(pars)), rtol=1e-13)
    # a subset of samples: the others keep their nominal yields
    first = model.samples[0]
    subset = {first: yields[first]}
    np.testing.assert_allclose(model.with_yields(subset).expected_counts(model.init),
                               rebuilt(model, subset).expected_counts(model.init), rtol=1e-13)


def test_sample_yields_and_traced_substitution():
    model = load("4_bin")
    y0 = model.sample_yields()
    assert list(y0) == model.samples
    np.testing.assert_array_equal(np.stack(list(y0.values())), model.nominal)
    # traced: the logpdf's gradient in the yields matches finite differences of the rebuilt JSON
    v = direction(model, 3)
    grad = jax.grad(lambda y: model.with_yields(y).logpdf(model.init))(y0)
    h = 1e-4
    ref = (float(rebuilt(model, shifted(model, v, h)).logpdf(model.init))
           - float(rebuilt(model, shifted(model, v, -h)).logpdf(model.init))) / (2 * h)
    assert directional(grad, v) == pytest.approx(ref, rel=1e-7)
    with pytest.raises(bayeshf.BayeshfError, match="no sample named"):
        model.with_yields({"nonsense": y0[model.samples[0]]})


# -- values and gradients against bayeshf.infer ---------------------------------------------

QUANTITIES = {
    # conditional: 2_bin_uncorr's free fit ends on mu_hat = 0 with a zero gradient there, a kink in y
    "nll": (lambda m, y: diff.nll(m, y, 1.0), lambda m: infer.fit(m, fixed={m.poi_name: 1.0}).twice_nll / 2),
    "Z0_expected": (lambda m, y: diff.significance(m, y, expected=True), lambda m: infer.significance(m).Z_exp[2]),
    "CLs": (lambda m, y: diff.cls(m, y, 1.0), lambda m: infer.hypotest(m, 1.0).CLs_obs),
    "CLs_expected": (lambda m, y: diff.cls(m, y, 1.0, expected=True), lambda m: infer.hypotest(m, 1.0).CLs_exp[2]),
    "limit_expected": (lambda m, y: diff.upper_limit(m, y, expected=True), lambda m: infer.upper_limit(m).exp[2]),
    "limit": (lambda m, y: diff.upper_limit(m, y), lambda m: infer.upper_limit(m).obs),
}


@pytest.mark.parametrize("name, quantity", [
    *[("2_bin_uncorr", q) for q in QUANTITIES],  # shapesys
    ("4_bin", "limit_expected"),  # normsys + histosys
    ("sbottom", "CLs"),  # staterror, lumi, 64 parameters; mu_hat on its bound 0
])
def test_value_and_gradient_match_infer(name, quantity):
    model = load(name)
    ours, reference = QUANTITIES[quantity]
    y0 = model.sample_yields()
    value, grad = jax.value_and_grad(lambda y: ours(model, y))(y0)
    assert float(value) == pytest.approx(reference(model), rel=1e-7)
    v = direction(model)
    assert directional(grad, v) == pytest.approx(fd(model, v, reference), rel=1e-5)


def test_test_statistics_equal_infer():
    model = load("4_bin")
    data = sum(model.sample_yields().values())  # mu_hat = 1
    assert float(diff.q0(model, data=data)) == pytest.approx(infer.significance(model.with_data(data)).q0_obs,
                                                             rel=1e-7)
    for poi_value in (0.5, 2.0):  # below mu_hat (clipped to 0) and above
        reference = infer.hypotest(model.with_data(data), poi_value).q_obs
        assert float(diff.qmu_tilde(model, poi_value=poi_value, data=data)) == pytest.approx(reference, rel=1e-7,
                                                                                            abs=1e-10)
        assert float(diff.qmu(model, poi_value=poi_value, data=data)) == pytest.approx(reference, rel=1e-7, abs=1e-10)
    assert float(diff.qmu(model, poi_value=0.5, data=data)) == 0.0


def test_ttbar_profiled_nll_gradient():
    # cheaply: one direction, the signal sample only
    model = load("ttbar")
    signal = "Signal"  # the ttbar signal, carrying the POI ttbarXsec
    assert signal in model.samples
    y0 = model.sample_yields()
    value, grad = jax.value_and_grad(lambda y: diff.nll(model, y))({signal: y0[signal]})
    assert float(value) == pytest.approx(infer.fit(model).twice_nll / 2, abs=1e-6)
    # bins of 1e4-1e5 events make the profiled NLL stiff along relative changes of the yields (a 0.1% change
    # per bin already leaves the linear regime); steps of the size of the yields' Poisson errors keep it smooth
    v = {signal: np.random.default_rng(5).normal(size=y0[signal].shape) * np.sqrt(y0[signal])}
    reference = fd(model, v, lambda m: infer.fit(m).twice_nll / 2, h=2e-3)
    assert directional(grad, v) == pytest.approx(reference, rel=1e-5)


def test_envelope_identity():
    """dq0/dy = d(2 NLL)/dy at the conditional (mu = 0) fit minus the same at the free fit."""
    model = load("4_bin")
    y0 = model.sample_yields()
    data = sum(y0.values())  # signal + background: mu_hat = 1 > 0, so q0 is not clipped
    grad = jax.grad(lambda y: diff.q0(model, y, data=data))(y0)
    target = model.with_data(data)
    free = infer.fit(target, gtol=1e-10).bestfit
    conditional = infer.fit(target, fixed={model.poi_name: 0.0}, gtol=1e-10).bestfit
    assert free[model.poi_index] > 0.5

    def twice_nll_at(pars):
        return lambda y: target.with_yields(y).twice_nll(pars)

    expected = jax.tree_util.tree_map(lambda a, b: a - b, jax.grad(twice_nll_at(conditional))(y0),
                                      jax.grad(twice_nll_at(free))(y0))
    for k in y0:
        np.testing.assert_allclose(grad[k], expected[k], rtol=1e-6, atol=1e-9)


def test_q0_clipped_gives_zero_gradient():
    # sbottom's observed data sit below the background: mu_hat is clipped at its bound 0, q0 = 0
    model = load("sbottom")
    assert infer.fit(model).bestfit[model.poi_index] == pytest.approx(0.0, abs=1e-8)
    value, grad = jax.value_and_grad(lambda y: diff.significance(model, y))(model.sample_yields())
    assert float(value) == 0.0
    for g in grad.values():
        np.testing.assert_array_equal(np.asarray(g), 0.0)


def test_vmap_over_yields():
    model = load("2_bin_uncorr")
    y0 = model.sample_yields()
    scales = jnp.array([0.5, 2.0])
    batched = jax.vmap(lambda c: diff.significance(model, {"signal": c * y0["signal"]}, expected=True))(scales)
    single = [float(diff.significance(model, {"signal": float(c) * y0["signal"]}, expected=True)) for c in scales]
    np.testing.assert_allclose(batched, single, rtol=1e-10)
    assert single[0] < single[1]


def test_unconverged_fit_gives_nan_gradient_and_warns(monkeypatch):
    import bayeshf.diff.solve as solve

    monkeypatch.setattr(solve, "MAXITER", 1)
    path, _ = MODELS["2_bin_corr"]
    model = bayeshf.load(path)  # a fresh model: programs compiled with one iteration only
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        grad = jax.grad(lambda y: diff.nll(model, y))(model.sample_yields())
    assert any(issubclass(w.category, diff.FitNotConvergedWarning) for w in caught)
    assert all(np.all(np.isnan(g)) for g in grad.values())


# -- soft histograms --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["kde", "sigmoid"])
def test_soft_histogram_gradients(method):
    rng = np.random.default_rng(2)
    x = rng.normal(size=40)
    edges = np.array([-2.0, -0.7, 0.1, 0.9, 2.2])
    weights = rng.uniform(0.5, 1.5, size=40)
    projection = rng.normal(size=4)

    def f(x, edges, weights):
        return jnp.dot(projection, diff.soft_histogram(x, edges, weights, bandwidth=0.3, method=method))

    grads = jax.grad(f, argnums=(0, 1, 2))(x, edges, weights)
    args = [x, edges, weights]
    h = 1e-5
    for i, g in enumerate(grads):
        for j in range(0, len(args[i]), max(1, len(args[i]) // 5)):
            up = [a.copy() for a in args]
            down = [a.copy() for a in args]
            up[i][j] += h
            down[i][j] -= h
            numeric = (float(f(*up)) - float(f(*down))) / (2 * h)
            assert float(g[j]) == pytest.approx(numeric, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("method", ["kde", "sigmoid"])
def test_soft_histogram_tends_to_the_histogram(method):
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 1, size=500)
    edges = np.linspace(0, 1, 6)
    x = x[np.min(np.abs(x[:, None] - edges[None, :]), axis=1) > 1e-3]  # no event on an edge
    weights = rng.uniform(size=len(x))
    hard, _ = np.histogram(x, edges, weights=weights)
    soft = diff.soft_histogram(x, edges, weights, bandwidth=1e-5, method=method)
    np.testing.assert_allclose(soft, hard, rtol=1e-10)
    with pytest.raises(bayeshf.BayeshfError, match="unknown method"):
        diff.soft_histogram(x, edges, method="box")
