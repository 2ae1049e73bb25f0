"""bayeshf.diff: yields as traced inputs, differentiable test statistics and limits, soft histograms.

Every gradient is checked against finite differences of the same quantity
computed by the ordinary path (bayeshf.infer on a model with the shifted
yields), and model.with_yields against a model built from a JSON whose
sample data were changed.
"""

from __future__ import annotations

import copy
import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayeshf
import bayeshf.diff as diff
import bayeshf.infer as infer
from bayeshf.model import HistFactoryModel
from bayeshf.teststats import AsymptoticCalculator

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
        if name == "4_bin_bounded":  # the POI may go negative; theta bounded at 0.5, below its mu = 0 optimum
            with open(MODELS["4_bin"][0]) as f:
                spec = json.load(f)
            spec["measurements"][0]["config"]["parameters"] = [{"name": "mu", "bounds": [[-5.0, 10.0]]},
                                                               {"name": "theta", "bounds": [[-5.0, 0.5]]}]
            _CACHE[name] = bayeshf.load(spec)
        else:
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


def fd(model, v, reference, h=1e-3, points=5):
    """Central difference (5 or 2 points) of reference(model with yields y0 + eps v) at eps = 0."""
    if points == 2:
        return (reference(model.with_yields(shifted(model, v, h)))
                - reference(model.with_yields(shifted(model, v, -h)))) / (2 * h)
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

BELOW = np.array([28.0, 18.0, 8.0, 3.0])  # 4_bin counts below its background: mu_hat < 0 where the POI may go there


def below(model):
    """BELOW with the model's auxiliary data, as infer takes data."""
    return np.concatenate([BELOW, model.auxdata])


def bounded():
    """Bounds for infer's q~ reference: the POI estimate held at or above 0 (the model lets it go below)."""
    return {"mu": (0.0, 10.0)}


QUANTITIES = {
    # conditional: 2_bin_uncorr's free fit ends on mu_hat = 0 with a zero gradient there, a kink in y
    "nll": (lambda m, y: diff.nll(m, y, 1.0), lambda m: infer.fit(m, fixed={m.poi_name: 1.0}).twice_nll / 2),
    "q0": (lambda m, y: diff.q0(m, y), lambda m: infer.significance(m).q0_obs),
    "Z0": (lambda m, y: diff.significance(m, y), lambda m: infer.significance(m).Z_obs),
    "Z0_expected": (lambda m, y: diff.significance(m, y, expected=True), lambda m: infer.significance(m).Z_exp[2]),
    # mu_hat < 0: q_mu lets the POI go there, q~_mu holds it at 0 (infer's q~ needs the POI bounded at 0)
    "qmu_below": (lambda m, y: diff.qmu(m, y, 1.0, data=BELOW),
                  lambda m: infer.hypotest(m, 1.0, test_stat="q", data=below(m)).q_obs),
    "qmu_tilde_below": (lambda m, y: diff.qmu_tilde(m, y, 1.0, data=BELOW),
                        lambda m: infer.hypotest(m, 1.0, data=below(m), bounds=bounded()).q_obs),
    "CLs": (lambda m, y: diff.cls(m, y, 1.0), lambda m: infer.hypotest(m, 1.0).CLs_obs),
    "limit_expected": (lambda m, y: diff.upper_limit(m, y, expected=True), lambda m: infer.upper_limit(m).exp[2]),
    "limit": (lambda m, y: diff.upper_limit(m, y), lambda m: infer.upper_limit(m).obs),
}

_GRADIENTS: dict = {}


def value_and_grad(name, quantity):
    """(value, gradient in all yields) of a quantity at the nominal yields, computed once per module."""
    if (name, quantity) not in _GRADIENTS:
        model = load(name)
        ours = QUANTITIES[quantity][0]
        _GRADIENTS[name, quantity] = jax.value_and_grad(lambda y: ours(model, y))(model.sample_yields())
    return _GRADIENTS[name, quantity]


@pytest.mark.parametrize("name, quantity", [
    # the expected CLs and limit are checked on sbottom and ttbar below: each case here is a compile of seconds
    *[("2_bin_uncorr", q) for q in ("nll", "Z0_expected", "CLs", "limit")],
    ("2_bin_corr", "Z0"),  # observed, mu_hat = 0.67
    # normsys + histosys; theta bounded at 0.5 sits on its bound in the mu = 0 fits (q0's, CLs's Asimov data)
    *[("4_bin_bounded", q) for q in ("q0", "qmu_below", "qmu_tilde_below", "CLs", "limit")],
    ("sbottom", "CLs"),  # staterror, lumi, 64 parameters; mu_hat on its bound 0
    ("sbottom", "limit_expected"),
])
def test_value_and_gradient_match_infer(name, quantity):
    model = load(name)
    reference = QUANTITIES[quantity][1]
    value, grad = value_and_grad(name, quantity)
    assert float(value) == pytest.approx(reference(model), rel=1e-7, abs=1e-12)
    v = direction(model)
    assert directional(grad, v) == pytest.approx(fd(model, v, reference), rel=1e-5)
    if quantity == "qmu_tilde_below":  # the floor matters here: q~ differs from q
        assert float(value) < float(value_and_grad(name, "qmu_below")[0]) - 0.05


def test_parameters_at_bounds_in_the_checked_fits():
    """The cases above named for bounds do exercise them (else their gradients would not test held parameters)."""
    model = load("4_bin_bounded")
    theta = model.parameter("theta").slice.start
    assert infer.fit(model, fixed={"mu": 0.0}).bestfit[theta] == pytest.approx(0.5)
    assert infer.fit(model.with_data(BELOW)).bestfit[model.poi_index] < -0.1
    assert infer.fit(model.with_data(BELOW), bounds=bounded()).bestfit[model.poi_index] == 0.0


def test_envelope_identity():
    """dq0/dy = d(2 NLL)/dy at the conditional (mu = 0) fit minus the same at the free fit."""
    model = load("4_bin_bounded")
    y0 = model.sample_yields()
    _, grad = value_and_grad("4_bin_bounded", "q0")
    free = infer.fit(model, gtol=1e-10).bestfit
    conditional = infer.fit(model, fixed={model.poi_name: 0.0}, gtol=1e-10).bestfit
    assert free[model.poi_index] > 0.5  # q0 is not clipped

    def twice_nll_at(pars):
        return lambda y: model.with_yields(y).twice_nll(pars)

    expected = jax.tree_util.tree_map(lambda a, b: a - b, jax.grad(twice_nll_at(conditional))(y0),
                                      jax.grad(twice_nll_at(free))(y0))
    for k in y0:
        np.testing.assert_allclose(grad[k], expected[k], rtol=1e-6, atol=1e-9)


def test_q0_clipped_gives_zero_gradient():
    # counts below the background: mu_hat < 0 (the POI may go there), q0 = 0 by the one-sided convention
    model = load("4_bin_bounded")
    assert infer.fit(model.with_data(BELOW)).bestfit[model.poi_index] < -0.1
    value, grad = jax.value_and_grad(lambda y: diff.q0(model, y, data=BELOW))(model.sample_yields())
    assert float(value) == 0.0
    for g in grad.values():
        np.testing.assert_array_equal(np.asarray(g), 0.0)


@pytest.fixture(scope="module")
def ttbar():
    """ATLAS ttbar (132 parameters): gradients along one direction of the signal yields, with a start for infer.

    The direction has the size of the bins' Poisson errors: bins of 1e4-1e5 events make the profiled
    quantities stiff along relative changes (a 0.1% change per bin leaves the linear regime).
    infer's default starts can end its mu = 0 fit in a local minimum (twice_nll 134 above the one
    bayeshf.diff finds; which one varies between processes): infer is started from diff's minimum
    there, and must find it no higher than from its own starts.
    """
    model = load("ttbar")
    signal = "Signal"  # the ttbar signal, carrying the POI ttbarXsec
    y0 = model.sample_yields()[signal]
    v = {signal: np.random.default_rng(5).normal(size=y0.shape) * np.sqrt(y0)}
    setup = diff._Setup(model)
    _, start, _ = setup.fit(model, (model.arrays.observed, model.arrays.auxdata), 0.0)
    start = np.asarray(start)
    default = infer.fit(model, fixed={model.poi_name: 0.0}).twice_nll
    assert infer.fit(model, fixed={model.poi_name: 0.0}, init=start).twice_nll <= default + 1e-6
    return model, signal, v, start


def test_ttbar_nll_gradient(ttbar):
    model, signal, v, _ = ttbar
    value, grad = jax.value_and_grad(lambda y: diff.nll(model, y))({signal: model.sample_yields()[signal]})
    assert float(value) == pytest.approx(infer.fit(model).twice_nll / 2, abs=1e-6)
    reference = fd(model, v, lambda m: infer.fit(m).twice_nll / 2, h=2e-3)
    assert directional(grad, v) == pytest.approx(reference, rel=1e-5)


def test_ttbar_q0_gradient(ttbar):
    model, signal, v, start = ttbar
    value, grad = jax.value_and_grad(lambda y: diff.q0(model, y))({signal: model.sample_yields()[signal]})

    def reference(m):  # infer's two fits (its significance() adds Asimov fits this test does not need)
        return infer.fit(m, fixed={m.poi_name: 0.0}, init=start).twice_nll - infer.fit(m).twice_nll

    assert float(value) == pytest.approx(reference(model), rel=1e-9)
    # five points: two-point differences at 1e-3 are off by 1e-5 (72.0394 against 72.0404), the curvature
    assert directional(grad, v) == pytest.approx(fd(model, v, reference), rel=1e-5)


def test_ttbar_expected_cls_and_limit_gradients(ttbar):
    """The expected CLs at the expected limit by finite differences of infer's; the limit through it.

    A root search of infer's on ttbar costs ~20 s of fits per shifted model, so the limit's
    derivative is checked as -(dCLs/dy) / (dCLs/dmu) with both parts differentiated numerically
    from infer's expected CLs at diff's limit, where infer's CLs must be the level (to 1e-8).
    Direct finite differences of the limit are checked on the smaller models above.
    """
    model, signal, v, start = ttbar
    y0 = {signal: model.sample_yields()[signal]}
    limit, limit_grad = jax.value_and_grad(lambda y: diff.upper_limit(model, y, expected=True))(y0)
    mu = float(limit)
    cls_value, cls_grad = jax.value_and_grad(lambda y: diff.cls(model, y, mu, expected=True))(y0)
    calc = AsymptoticCalculator(model, init=start)
    assert calc.expected_cls(mu)[2] == pytest.approx(0.05, rel=1e-8)
    assert float(cls_value) == pytest.approx(0.05, rel=1e-8)
    d_cls = fd(model, v, lambda m: AsymptoticCalculator(m, init=start).expected_cls(mu)[2])
    assert directional(cls_grad, v) == pytest.approx(d_cls, rel=1e-5)
    h = 1e-4 * mu
    cls_at = {k: calc.expected_cls(mu + k * h)[2] for k in (-2, -1, 1, 2)}
    slope = (cls_at[-2] - 8 * cls_at[-1] + 8 * cls_at[1] - cls_at[2]) / (12 * h)
    assert directional(limit_grad, v) == pytest.approx(-d_cls / slope, rel=1e-5)


def test_vmap_over_yields():
    model = load("2_bin_uncorr")
    y0 = model.sample_yields()
    scales = jnp.array([0.5, 2.0])
    batched = jax.vmap(lambda c: diff.nll(model, {**y0, "signal": c * y0["signal"]}, 1.0))(scales)
    single = [float(QUANTITIES["nll"][0](model, {**y0, "signal": float(c) * y0["signal"]})) for c in scales]
    np.testing.assert_allclose(batched, single, rtol=1e-12)
    assert single[0] < single[1]  # the data favour a smaller signal than at mu = 1


def test_unconverged_fit_gives_nan_gradient_and_warns(monkeypatch):
    import bayeshf.diff.solve as solve

    monkeypatch.setattr(solve, "MAXITER", 1)
    path, _ = MODELS["2_bin_corr"]
    model = bayeshf.load(path)  # no nll program of this structure compiled elsewhere: this one has one iteration
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

    @jax.jit  # one program for the dozens of evaluations below
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
