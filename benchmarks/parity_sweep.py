"""Asymptotic CLs (qtilde) of bayeshf against pyhf on every sbottom patch and SRee_SRmm_Srem, at several mu.

    nice -n 10 python -m benchmarks.parity_sweep [--data /work/shared/data] [--mu 0.5 1 2]

pyhf runs its numpy backend with SciPy's SLSQP at tolerance 1e-12. Per point: both CLs_obs, the largest
relative difference over CLs_obs and the expected band, and both conditional twice_nll at mu, so a
difference can be read as "which fit is lower". Results go to benchmarks/results/parity_sweep.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def _cases(data: Path) -> list[tuple[Path, Path | None]]:
    cases: list[tuple[Path, Path | None]] = []
    for region in sorted((data / "sbottom").glob("Region*")):
        cases += [(region / "BkgOnly.json", patch) for patch in sorted(region.glob("patch.*.json"))]
    return cases + [(data / "atlas-examples" / "SRee_SRmm_Srem_v2.json", None)]


def main(argv: list[str] | None = None) -> None:
    import jsonpatch
    import pyhf

    import bayeshf
    import bayeshf.infer as infer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--mu", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--output", type=Path, default=RESULTS / "parity_sweep.json")
    args = parser.parse_args(argv)
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    rows = []
    for workspace, patch in _cases(args.data):
        spec = json.loads(workspace.read_text())
        if patch is not None:
            spec = jsonpatch.apply_patch(spec, json.loads(patch.read_text()))
        ws = pyhf.Workspace(spec)
        pm = ws.model()
        data = ws.data(pm)
        model = bayeshf.load(str(workspace), patches=[str(patch)] if patch else None)
        for mu in args.mu:
            obs, exp = pyhf.infer.hypotest(mu, data, pm, test_stat="qtilde", return_expected_set=True)
            ours = infer.hypotest(model, mu)
            theirs = np.array([float(obs), *map(float, exp)])
            mine = np.array([ours.CLs_obs, *ours.CLs_exp])
            _, pyhf_nll = pyhf.infer.mle.fixed_poi_fit(mu, data, pm, return_fitted_val=True)
            row = {"workspace": workspace.parent.name + "/" + (patch.name if patch else workspace.name), "mu": mu,
                   "pyhf_CLs_obs": theirs[0], "bayeshf_CLs_obs": mine[0],
                   "max_rel_diff": float(np.max(np.abs(mine - theirs) / np.maximum(theirs, 1e-300))),
                   "pyhf_fixed_twice_nll": float(pyhf_nll),
                   "bayeshf_fixed_twice_nll": infer.fit(model, fixed={model.poi_name: mu}).twice_nll}
            rows.append(row)
            print(json.dumps(row), flush=True)
            args.output.write_text(json.dumps({"pyhf": pyhf.__version__, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
