"""Write bayeshf/julia_project/test/reference.json: inputs for the Julia tests and pyhf's answers for them.

Run from the repository root: ``python bayeshf/julia_project/test/make_reference.py``.
Answers come from pyhf (main Poisson log-likelihood with LiteHF.jl's
interpolation codes, normsys code1 / histosys code0) and, for the sampling
cross-check, from bayeshf's blackjax NUTS (an independent sampler); the inputs
(LiteHF names, prior expressions, template, free indices) from bayeshf.julia.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT / "tests"))

import bayeshf  # noqa: E402
import pyhf  # noqa: E402
from bayeshf.julia.expressions import prior_expressions  # noqa: E402
from bayeshf.julia.litehf import LITEHF_CODES, litehf_names  # noqa: E402
from bayeshf.priors import build_priors  # noqa: E402
from test_julia import ALL_KINDS  # noqa: E402

SETTINGS = {kind: {"interpcode": code} for kind, code in LITEHF_CODES.items()}
CASES = ["thesis/2_bin_corr.json", "thesis/2_bin_uncorr.json", "thesis/4_bin.json",
         "pyhf-validation/1bin_lumi.json", "pyhf-validation/2bin_2channel.json",
         "pyhf-validation/2bin_2channel_couplednorm.json", "pyhf-validation/2bin_2channel_coupledhisto.json",
         "all_kinds.json"]
#: tests/data relative to this directory (the Julia tests read the workspaces from there)
DATA = Path("..", "..", "..", "tests", "data")


def case(relative: str, rng: np.random.Generator) -> dict:
    path = HERE / relative if relative == "all_kinds.json" else ROOT / "tests" / "data" / relative
    spec = json.loads(path.read_text())
    model = bayeshf.load(spec, modifier_settings=SETTINGS)
    prior_set = build_priors(model)
    free, expressions = prior_expressions(prior_set)
    pyhf.set_backend("numpy")
    reference = pyhf.Workspace(spec).model(modifier_settings=SETTINGS)
    assert list(reference.config.par_names) == list(model.par_names)
    init = np.asarray(reference.config.suggested_init(), dtype=float)
    bounds = np.asarray(reference.config.suggested_bounds(), dtype=float)
    fixed = np.asarray(reference.config.suggested_fixed(), dtype=bool)
    points = [init]
    for _ in range(3):
        width = np.minimum(bounds[:, 1] - bounds[:, 0], 2.0)
        point = np.clip(init + 0.2 * width * rng.uniform(-1, 1, size=init.shape), bounds[:, 0], bounds[:, 1])
        points.append(np.where(fixed, init, point))
    observed = np.asarray(model.observed, dtype=float)
    main = [float(reference.mainlogpdf(observed, p)) for p in points]
    template = np.where(prior_set.fixed, prior_set.fixed_values, np.asarray(model.init, dtype=float))
    return {"path": str(DATA / relative) if relative != "all_kinds.json" else relative,
            "par_names": list(model.par_names), "litehf_names": litehf_names(model),
            "points": [p.tolist() for p in points], "main_logpdf": main,
            "prior_expressions": expressions, "free": [i + 1 for i in free], "template": template.tolist()}


def posterior_reference() -> dict:
    from bayeshf.sampling import sample

    relative = "pyhf-validation/1bin_shapesys.json"
    model = bayeshf.load(ROOT / "tests" / "data" / relative)
    idata = sample(model, chains=4, draws=4000, seed=0, progress=False, prior_draws=0)
    mu = np.asarray(idata.posterior["mu"].values).ravel()
    prior_set = build_priors(model)
    free, expressions = prior_expressions(prior_set)
    template = np.where(prior_set.fixed, prior_set.fixed_values, np.asarray(model.init, dtype=float))
    return {"path": str(DATA / relative), "litehf_names": litehf_names(model),
            "prior_expressions": expressions, "free": [i + 1 for i in free], "template": template.tolist(),
            "mu_mean": float(mu.mean()), "mu_sd": float(mu.std()), "sampler": "bayeshf blackjax NUTS 4x4000"}


def main() -> None:
    (HERE / "all_kinds.json").write_text(json.dumps(ALL_KINDS, indent=1) + "\n")
    rng = np.random.default_rng(2026)
    out = {"generated_by": "bayeshf/julia_project/test/make_reference.py", "pyhf": pyhf.__version__,
           "workspaces": [case(c, rng) for c in CASES], "posterior": posterior_reference()}
    (HERE / "reference.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
