"""Parity of the compiled model with pyhf 0.7.6 on every workspace in tests/data."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayeshf
from conftest import WORKSPACES, data_path, pyhf_model, workspace_id

CODES = {
    "default": None,
    "code1-code0": {"normsys": {"interpcode": "code1"}, "histosys": {"interpcode": "code0"}},
    "code4-code2": {"normsys": {"interpcode": "code4"}, "histosys": {"interpcode": "code2"}},
}


def parameter_points(model, n, seed):
    """The inits plus random points inside the bounds (spanning all interpolation regions)."""
    rng = np.random.default_rng(seed)
    low, high = model.bounds.T
    high = np.minimum(high, low + 4.0)  # alphas in [-5, -1): all branches of every code are hit
    points = [model.init]
    for _ in range(n):
        points.append(rng.uniform(low, high))
    # alphas inside (-1, 1) too: the polynomial regions
    points.append(np.where(model.bounds[:, 0] < 0, rng.uniform(-0.9, 0.9, model.npars), model.init))
    return points


@pytest.mark.parametrize("codes", list(CODES), ids=list(CODES))
@pytest.mark.parametrize("case", WORKSPACES, ids=[workspace_id(c) for c in WORKSPACES])
def test_counts_and_logpdf_match_pyhf(case, codes):
    path, patch = data_path(case[0]), case[1] and data_path(case[1])
    settings = CODES[codes]
    model = bayeshf.load(path, patches=[patch] if patch else None, modifier_settings=settings)
    reference, data = pyhf_model(path, patch, settings)

    assert model.par_names == reference.config.par_names
    assert model.par_order == reference.config.par_order
    assert model.poi_name == reference.config.poi_name
    np.testing.assert_array_equal(model.init, reference.config.suggested_init())
    np.testing.assert_array_equal(model.bounds, np.asarray(reference.config.suggested_bounds()))
    np.testing.assert_array_equal(model.fixed, reference.config.suggested_fixed())
    np.testing.assert_array_equal(model.data, data)
    np.testing.assert_array_equal(model.auxdata, reference.config.auxdata)

    points = np.stack(parameter_points(model, 6, seed=sum(map(ord, str(case)))))
    # one compiled program for every quantity at every point
    ours = jax.jit(jax.vmap(lambda p: (model.expected_counts(p), model.asimov_data(p), model.logpdf(p))))
    counts, asimov, logpdf = ours(points)
    for i, pars in enumerate(points):
        np.testing.assert_allclose(counts[i], reference.expected_actualdata(pars), rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(asimov[i], reference.expected_data(pars), rtol=1e-12)
        np.testing.assert_allclose(float(logpdf[i]), reference.logpdf(pars, data)[0], rtol=1e-10)


# every modifier type and both default codes are covered by these; pyhf's jax backend
# takes long to compile, so the gradient oracle runs on a representative set
GRADIENT_CASES = [c for c in WORKSPACES if workspace_id(c) in {
    "2_bin_uncorr", "4_bin", "1bin_lumi", "2bin_2channel_coupledshapefactor", "SRee_SRmm_Srem_v2",
    "ttbar_ljets_xsec_inclusive_pruned", "BkgOnly+sbottom_1300_205_60"}]


@pytest.mark.parametrize("case", GRADIENT_CASES, ids=workspace_id)
def test_gradient_matches_pyhf_jax(case):
    path, patch = data_path(case[0]), case[1] and data_path(case[1])
    model = bayeshf.load(path, patches=[patch] if patch else None)
    reference, data = pyhf_model(path, patch, backend="jax")
    try:
        data = jnp.asarray(data)
        grad_ours = jax.jit(jax.grad(model.logpdf))
        grad_pyhf = jax.jit(jax.grad(lambda p: reference.logpdf(p, data)[0]))
        for pars in parameter_points(model, 2, seed=7):
            expected = grad_pyhf(jnp.asarray(pars))
            np.testing.assert_allclose(grad_ours(jnp.asarray(pars)), expected, rtol=1e-8, atol=1e-10)
            value, grad = model.value_and_grad(pars)  # the host API: NumPy in, float + NumPy out
            assert isinstance(value, float) and isinstance(grad, np.ndarray)
            np.testing.assert_allclose(value, float(reference.logpdf(pars, data)[0]), rtol=1e-10)  # NaN == NaN
            np.testing.assert_allclose(grad, expected, rtol=1e-8, atol=1e-10)
    finally:
        import pyhf

        pyhf.set_backend("numpy")


def test_logpdf_decomposes_into_main_and_constraint():
    model = bayeshf.load(data_path("thesis/4_bin.json"))
    pars = model.init + 0.1
    total = model.log_likelihood(pars) + model.log_constraint(pars)
    assert float(model.logpdf(pars)) == pytest.approx(float(total), rel=1e-14)
    assert float(model.twice_nll(pars)) == pytest.approx(-2 * float(total), rel=1e-14)


def test_with_data_and_vmap():
    model = bayeshf.load(data_path("thesis/2_bin_uncorr.json"))
    pars = np.stack([model.init, model.init * 1.1])
    batched = jax.vmap(model.logpdf)(pars)
    assert batched.shape == (2,)
    assert float(batched[1]) == pytest.approx(float(model.logpdf(pars[1])))
    other = model.with_data(model.observed + 3.0)
    assert float(other.logpdf(model.init)) != float(model.logpdf(model.init))
    np.testing.assert_array_equal(other.observed, model.observed + 3.0)
    # main-only data in logpdf equals with_data
    assert float(model.logpdf(model.init, model.observed + 3.0)) == pytest.approx(float(other.logpdf(model.init)))


def test_host_value_and_grad_with_other_data():
    model = bayeshf.load(data_path("thesis/2_bin_corr.json"))
    pars = list(model.init * 1.05)  # a list is accepted
    reference = jax.value_and_grad(model.logpdf)
    value, grad = model.value_and_grad(pars)
    assert value == pytest.approx(float(reference(jnp.asarray(pars))[0]), rel=1e-14)
    shifted = model.observed + 2.0
    other = model.with_data(shifted, model.auxdata * 1.1)
    for got, (want_value, want_grad) in (
        (model.value_and_grad(pars, shifted), reference(jnp.asarray(pars), shifted)),
        (model.value_and_grad(pars, other.data), reference(jnp.asarray(pars), other.data)),
        (other.value_and_grad(pars), jax.value_and_grad(other.logpdf)(jnp.asarray(pars))),
    ):
        assert got[0] == pytest.approx(float(want_value), rel=1e-14)
        np.testing.assert_allclose(got[1], want_grad, rtol=1e-12)
    assert other.value_and_grad(pars)[0] != pytest.approx(value)  # with_data copies use their own data
    assert model.value_and_grad(pars)[0] == value
    # toys: copies made before any call still share one compiled program
    fresh = bayeshf.load(data_path("thesis/2_bin_corr.json"))
    toys = [fresh.with_data(fresh.observed + k) for k in range(3)]
    for toy in toys:
        toy.value_and_grad(pars)
    assert toys[0]._host["program"]._cache_size() == 1  # compiled once for all toys
    grad = toys[0].value_and_grad(pars)[1]
    grad *= -1.0  # writable
    import pickle

    copy = pickle.loads(pickle.dumps(toys[1]))  # picklable after use; programs rebuilt on demand
    assert copy.value_and_grad(pars)[0] == toys[1].value_and_grad(pars)[0]


def test_host_program_reads_small_arrays_from_one_buffer():
    from bayeshf.model import _ONE_BUFFER, _one_buffer

    model = bayeshf.load(data_path("pyhf-validation/2bin_2channel_couplednorm.json"))
    assert model.arrays.normsys_coefficients.shape[0] > 0
    views = jax.jit(_one_buffer)(model.arrays)
    for name in _ONE_BUFFER:  # the same values and shapes, read from one buffer
        np.testing.assert_array_equal(getattr(views, name), getattr(model.arrays, name))
    for name in set(model.arrays._fields) - set(_ONE_BUFFER):
        assert getattr(views, name) is getattr(model.arrays, name) or np.array_equal(getattr(views, name),
                                                                                   getattr(model.arrays, name))
    pars = model.init * 1.07
    value, grad = model.value_and_grad(pars)
    assert "optimization_barrier" in model._host_own_data.lower(pars).as_text()  # the host program uses it
    want_value, want_grad = jax.value_and_grad(model.logpdf)(jnp.asarray(pars))
    assert value == pytest.approx(float(want_value), rel=1e-14)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-13)


def test_normsys_sums_as_a_matrix_product_for_large_finite_tables(monkeypatch):
    import json

    import bayeshf.model as bm

    ttbar = bayeshf.load(data_path("atlas-examples/ttbar_ljets_xsec_inclusive_pruned.json"))
    E = ttbar.arrays.normsys_param.shape[0]
    assert E >= bm._NORMSYS_PRODUCT[0] and ttbar.arrays.normsys_onehot.shape[0] == E  # parity: test above
    assert np.all(ttbar.arrays.normsys_onehot.sum(axis=1) == 1.0)
    path = data_path("pyhf-validation/2bin_2channel_couplednorm.json")
    small = bayeshf.load(path)
    assert small.arrays.normsys_onehot.shape[0] == 0  # a small table keeps the segment sum
    monkeypatch.setattr(bm, "_NORMSYS_PRODUCT", (1, 1 << 16))
    forced = bayeshf.load(path)
    assert forced.arrays.normsys_onehot.shape[0] == forced.arrays.normsys_param.shape[0] > 0
    for pars in parameter_points(small, 3, seed=3):
        want_value, want_grad = jax.value_and_grad(small.logpdf)(jnp.asarray(pars))
        value, grad = jax.value_and_grad(forced.logpdf)(jnp.asarray(pars))
        assert float(value) == pytest.approx(float(want_value), rel=1e-14)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-13, atol=1e-15)
    spec = json.loads(path.read_text())  # a normsys factor of 0 (log -inf) never reaches the tables: refused at load
    for channel in spec["channels"]:
        for sample in channel["samples"]:
            for modifier in sample["modifiers"]:
                if modifier["type"] == "normsys":
                    modifier["data"]["lo"] = 0.0
    with pytest.raises(bayeshf.BayeshfError, match=r"lo factor 0.*data\.lo"):
        bayeshf.load(spec)


def test_host_value_and_grad_refuses_tracers():
    model = bayeshf.load(data_path("thesis/4_bin.json"))
    with pytest.raises(bayeshf.BayeshfError, match="inside traced code"):
        jax.jit(lambda m: m.value_and_grad(np.asarray(m.init))[1])(model)


def test_model_is_a_pytree_usable_inside_jit():
    model = bayeshf.load(data_path("thesis/4_bin.json"))

    @jax.jit
    def f(m, p):
        return m.logpdf(p)

    assert float(f(model, model.init)) == pytest.approx(float(model.logpdf(model.init)))


def test_code4_normsys_second_derivatives_through_its_custom_jvp():
    """The code4 custom JVP (value and slope in one pass) still gives the right Hessian (forward over reverse)."""
    model = bayeshf.load(data_path("sbottom/RegionA/BkgOnly.json"))
    assert model.arrays.normsys_param.shape[0] > 0
    x = jnp.asarray(model.init)
    grad = jax.grad(model.logpdf)
    hessian_row = jax.hessian(model.logpdf)(x)[0]
    eps = 1e-6
    fd = (grad(x.at[0].add(eps)) - grad(x.at[0].add(-eps))) / (2 * eps)
    np.testing.assert_allclose(hessian_row, fd, rtol=1e-5, atol=1e-7)
