"""Parity with pyhf on randomly generated workspaces that mix all seven modifiers.

Shared modifiers across channels and samples, zero-yield bins, empty
shapesys/staterror bins and fixed parameters, under every interpolation code.
"""

from __future__ import annotations

import jax
import numpy as np
from scipy.special import gammaln
import pyhf
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import bayeshf


def random_spec(seed: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    n_channels = int(rng.integers(1, 4))
    shared_normsys = [f"ns_shared{i}" for i in range(int(rng.integers(0, 3)))]
    shared_histosys = [f"hs_shared{i}" for i in range(int(rng.integers(0, 3)))]
    channels, observations = [], []
    parameters = []
    for c in range(n_channels):
        nbins = int(rng.integers(1, 5))
        samples = []
        for s in range(int(rng.integers(1, 4))):
            nominal = rng.uniform(0.5, 50.0, nbins)
            nominal[rng.random(nbins) < 0.15] = 0.0  # empty bins
            modifiers = []
            if s == 0:
                modifiers.append({"name": "mu", "type": "normfactor", "data": None})
            if rng.random() < 0.5:
                modifiers.append({"name": f"norm_{s}", "type": "normfactor", "data": None})
            for name in shared_normsys + [f"ns_{c}_{s}"]:
                if rng.random() < 0.7:
                    hi, lo = rng.uniform(1.01, 1.4), rng.uniform(0.6, 0.99)
                    modifiers.append({"name": name, "type": "normsys", "data": {"hi": hi, "lo": lo}})
            for name in shared_histosys + [f"hs_{c}_{s}"]:
                if rng.random() < 0.7:
                    shift = rng.uniform(-0.3, 0.3, (2, nbins)) * nominal
                    modifiers.append(
                        {
                            "name": name,
                            "type": "histosys",
                            "data": {"hi_data": (nominal + np.abs(shift[0])).tolist(),
                                     "lo_data": np.maximum(nominal - np.abs(shift[1]), 0).tolist()},
                        }
                    )
            if rng.random() < 0.6:
                uncertainty = rng.uniform(0.0, 0.3, nbins) * nominal
                uncertainty[rng.random(nbins) < 0.2] = 0.0
                modifiers.append({"name": f"staterror_ch{c}", "type": "staterror", "data": uncertainty.tolist()})
            if rng.random() < 0.4:
                uncertainty = rng.uniform(0.0, 0.3, nbins) * nominal
                modifiers.append({"name": f"shapesys_{c}_{s}", "type": "shapesys", "data": uncertainty.tolist()})
            if rng.random() < 0.3:
                modifiers.append({"name": f"shapefactor_{c}", "type": "shapefactor", "data": None})
            if rng.random() < 0.5:
                modifiers.append({"name": "lumi", "type": "lumi", "data": None})
            samples.append({"name": f"sample{s}", "data": nominal.tolist(), "modifiers": modifiers})
        channels.append({"name": f"channel{c}", "samples": samples})
        observations.append({"name": f"channel{c}", "data": rng.poisson(20, nbins).astype(float).tolist()})
    names = {m["name"] for ch in channels for s in ch["samples"] for m in s["modifiers"]}
    if "lumi" in names:
        parameters.append({"name": "lumi", "auxdata": [1.0], "sigmas": [0.02], "bounds": [[0.8, 1.2]], "inits": [1.0]})
    fixable = sorted(n for n in names if n.startswith("ns_") or n.startswith("norm_"))
    if fixable and rng.random() < 0.5:
        parameters.append({"name": fixable[int(rng.integers(len(fixable)))], "fixed": True})
    spec = {
        "channels": channels,
        "observations": observations,
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": parameters}}],
        "version": "1.0.0",
    }
    codes = {
        "normsys": {"interpcode": str(rng.choice(["code1", "code4"]))},
        "histosys": {"interpcode": str(rng.choice(["code0", "code2", "code4p"]))},
    }
    return spec, codes


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=2**32 - 1))
@example(418)  # a shapesys of relative uncertainty ~1e-4: auxdata 5.6e7, rounding of ~1e9-sized terms
def test_random_workspace_matches_pyhf(seed):
    spec, codes = random_spec(seed)
    pyhf.set_backend("numpy")
    reference = pyhf.Workspace(spec).model(modifier_settings=codes)
    data = pyhf.Workspace(spec).data(reference)
    model = bayeshf.load(spec, modifier_settings=codes)

    assert model.par_names == reference.config.par_names
    np.testing.assert_array_equal(model.fixed, reference.config.suggested_fixed())
    np.testing.assert_array_equal(model.data, data)
    rng = np.random.default_rng(seed)
    low, high = model.bounds.T
    points = np.stack([model.init] + [rng.uniform(low, np.minimum(high, low + 4)) for _ in range(3)])
    counts, logpdf = jax.vmap(lambda p: (model.expected_counts(p), model.logpdf(p)))(points)
    # a shapesys with a tiny relative uncertainty has auxdata ~1e7-1e8, and its Poisson term
    # xlogy(a, a) - a - lgamma(a + 1) cancels terms of ~1e9: both sides are then exact only to a few
    # ulps of those terms (seed 418: 1.2e-7 absolute on -127.46), so that rounding is allowed as well
    values = np.asarray(data, dtype=float)
    cancelling = float(np.sum(np.abs(values * np.log(np.maximum(values, 1.0))) + values
                              + np.abs(gammaln(values + 1.0))))
    for i, pars in enumerate(points):
        np.testing.assert_allclose(counts[i], reference.expected_actualdata(pars), rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(float(logpdf[i]), reference.logpdf(pars, data)[0], rtol=1e-10,
                                   atol=8 * np.finfo(float).eps * cancelling)
