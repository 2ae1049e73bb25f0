"""A/B of the toys with the mirror probes against the two-start scheme (10,000 toys per hypothesis, sbottom
RegionA + 1300_205_60, two interleaved pairs): python benchmarks/toys_probe_ab.py; docs/frequentist.md, Toys."""

import time

import numpy as np


def main() -> None:
    import bayeshf
    from bayeshf import toys

    bayeshf.runtime.configure(compilation_cache=False)
    model = bayeshf.load("tests/data/sbottom/RegionA/BkgOnly.json", patches=["tests/data/sbottom/RegionA/patch.sbottom_1300_205_60.json"])
    orig = toys.several_valley_parameters
    toys.hypotest(model, 1.0, ntoys=300, seed=1)
    toys.several_valley_parameters = lambda m: np.zeros(0, int)
    toys.hypotest(model, 1.0, ntoys=300, seed=1)
    for rep in range(2):
        for label, f in (("probes", orig), ("two starts", lambda m: np.zeros(0, int))):
            toys.several_valley_parameters = f
            t = time.perf_counter(); c = time.process_time()
            r = toys.hypotest(model, 1.0, ntoys=10000, seed=0)
            print(label, f"wall {time.perf_counter()-t:.1f} cpu {time.process_time()-c:.1f}", r.CLs_obs)


if __name__ == "__main__":
    main()
