"""Single fits on toy data with and without the mirror probes (bayeshf.fit._probe_mirrors).

``python -m benchmarks.valley_single WS PATCH SEED NTOYS``: s+b toys at mu = 1 as toys.hypotest draws
them; ``bayeshf.fit`` free and fixed at mu = 1 on each, with the probes and with them switched off, and
the batched toy minima; prints how many fits of each end above the lowest minimum any of them found
(by more than 1e-6) and the CPU time of the single fits. docs/frequentist.md has the numbers.
"""

from __future__ import annotations

import argparse
import importlib
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace")
    parser.add_argument("patch")
    parser.add_argument("seed", type=int)
    parser.add_argument("ntoys", type=int)
    args = parser.parse_args()
    import bayeshf
    from bayeshf import toys

    bayeshf.runtime.configure(compilation_cache=False)
    fitmod = importlib.import_module("bayeshf.fit")  # the module (bayeshf.fit is also the function)
    model = bayeshf.load(args.workspace, patches=[args.patch])
    observed = np.concatenate([np.asarray(model.observed, float), np.asarray(model.auxdata, float)])
    _, at_test, _ = toys._observed_fits(model, 1.0, observed, "qtilde")
    data = toys.sample_toys(model, at_test.bestfit, args.ntoys, np.random.default_rng(args.seed))
    minima = toys.toy_minima(model, 1.0, data, at_test.bestfit)
    probe = fitmod._probe_mirrors
    found = {}
    for label, function in (("without probes", lambda problem, result, options, **_: result), ("with probes", probe)):
        fitmod._probe_mirrors = function
        start, values = time.process_time(), []
        for d in data:
            free = bayeshf.fit(model, data=d)
            fixed = bayeshf.fit(model, data=d, fixed={model.poi_name: 1.0}, init=free.bestfit, reference=free)
            values.append([r.twice_nll if r.success else np.inf for r in (free, fixed)])
        found[label] = (np.asarray(values), time.process_time() - start)
    fitmod._probe_mirrors = probe
    batched = np.stack([minima.free_nll, minima.fixed_nll], axis=1)
    lowest = np.minimum.reduce([v for v, _ in found.values()] + [batched])
    for label, (values, cpu) in found.items():
        print(f"{label}: {int(np.sum(values > lowest + 1e-6))} of {values.size} above, CPU {cpu:.1f} s")
    print(f"batched toys: {int(np.sum(batched > lowest + 1e-6))} of {batched.size} above")


if __name__ == "__main__":
    main()
