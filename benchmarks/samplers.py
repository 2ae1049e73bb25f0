"""Suite ``samplers``: NUTS of bayeshf, numpyro and nutpie on bayeshf's own log-density (only the sampler differs).

Every sampler gets the same function: bayeshf's posterior on its unconstrained
space (``bayeshf.posterior``: transforms, log-Jacobians, yield factors),
whitened by the same Laplace approximation bayeshf samples in
(``sampling._whitening``), jitted once, with the chains started from N(0, I)
draws in those coordinates (the Laplace jitter). bayeshf runs its own kernel
and window adaptation (``sampling.run_chains``); numpyro its NUTS kernel and
Stan-style warm-up (``numpyro.infer.hmc.hmc(potential_fn, algo="NUTS")``, diagonal mass matrix); nutpie its
gradient-based mass-matrix adaptation on the same value-and-gradient (a Python
callback, which costs it some speed but not ESS per gradient). All target the
acceptance rate bayeshf chooses for the model. Per seed: min bulk and min tail
ESS over parameters (ArviZ, on the constrained draws), gradients in the kept
draws, divergences, wall time (warm-up + draws; compiled before timing); the
rows give the median and the worst over seeds of ESS per 1000 gradients and
of ESS/s, min(bulk, tail) ESS being the one that counts. For ttbar also
P(WjetsNorm_1b < -2) and its 1% quantile per seed: a fast run that misses the
tail is not a success (docs/sampling.md).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from benchmarks.cases import load_case
from benchmarks.harness import Recorder, summarize
from benchmarks.peers import Unavailable
from benchmarks.progress import progress

CHAINS = 4
WARMUP = 1000
DRAWS = 1000
SEEDS = 10
QUICK = dict(warmup=150, draws=150, seeds=2, chains=2)

#: the parameter whose left tail ttbar's check looks at
TAIL_PARAMETER = "WjetsNorm_1b"


class Density:
    """bayeshf's whitened log-density of one workspace: ``logp(u)``, ``value_and_grad(u)``, ``theta(u)``."""

    def __init__(self, spec: dict[str, Any]):
        import jax
        import jax.numpy as jnp

        import bayeshf
        from bayeshf import sampling

        self.model = bayeshf.load(spec)
        self.posterior = sampling.posterior_for(self.model)
        _, (shift, factor, basis, weights) = sampling._whitening(self.posterior, ())
        self.ndim = self.posterior.ndim
        self.target = sampling.default_target_acceptance("nuts", self.ndim,
                                                         sampling.interpolated_parameters(self.model))

        def to_z(u):
            if factor.ndim == 1:
                if basis.shape[-1]:
                    u = u + basis @ (weights * (u @ basis))
                return shift + factor * u
            return shift + factor @ u

        posterior = self.posterior
        self.logp = lambda u: posterior.logdensity_fn(to_z(u))
        self.value_and_grad = jax.jit(jax.value_and_grad(self.logp))
        self.theta = jax.jit(jax.vmap(lambda u: posterior.constrain_free(to_z(u))))
        self.names = list(posterior.free_names)
        self.jnp = jnp

    def starts(self, seed: int, chains: int) -> np.ndarray:
        return np.random.default_rng(seed).normal(size=(chains, self.ndim))

    def to_theta(self, u: np.ndarray) -> np.ndarray:
        chains, draws, ndim = u.shape
        return np.asarray(self.theta(self.jnp.asarray(u.reshape(-1, ndim)))).reshape(chains, draws, ndim)


Runner = Callable[[int], dict[str, Any]]  # seed -> {"theta": (chains, draws, ndim), "gradients", "divergences"}


def prepare_bayeshf(density: Density, chains: int, warmup: int, draws: int) -> Runner:
    from bayeshf.sampling import run_chains

    def run(seed: int) -> dict[str, Any]:
        raw = run_chains(density.posterior, chains=chains, warmup=warmup, draws=draws, seed=seed, progress=False)
        return {"theta": np.asarray(raw.stats.theta), "gradients": int(raw.stats.n_steps.sum()),
                "divergences": int(raw.stats.diverging.sum())}

    return run


def prepare_numpyro(density: Density, chains: int, warmup: int, draws: int) -> Runner:
    try:
        import jax
        from numpyro.infer.hmc import hmc
    except ImportError as error:
        raise Unavailable(f"not run: numpyro is not installed ({error})") from error

    # numpyro's functional NUTS: sample_kernel adapts step size and diagonal mass matrix in Stan's windows
    # during the first num_warmup calls; one jitted scan per run length, reused across seeds and chains
    # (MCMC objects recompiled on every run here)
    init_kernel, sample_kernel = hmc(potential_fn=lambda u: -density.logp(u), algo="NUTS")

    @jax.jit
    def steps(state):
        def body(state, _):
            state = sample_kernel(state)
            return state, (state.z, state.num_steps, state.diverging)

        return jax.lax.scan(body, state, None, length=warmup + draws)[1]

    def run(seed: int) -> dict[str, Any]:
        starts = density.starts(seed, chains)
        keys = jax.random.split(jax.random.PRNGKey(seed), chains)
        u, gradients, divergences = [], 0, 0
        for chain in range(chains):
            state = init_kernel(density.jnp.asarray(starts[chain]), num_warmup=warmup, target_accept_prob=density.target,
                                max_tree_depth=10, rng_key=keys[chain])
            z, n_steps, diverging = (np.asarray(x)[warmup:] for x in steps(state))
            u.append(z)
            gradients += int(n_steps.sum())
            divergences += int(diverging.sum())
        return {"theta": density.to_theta(np.stack(u)), "gradients": gradients, "divergences": divergences}

    return run


def prepare_nutpie(density: Density, chains: int, warmup: int, draws: int) -> Runner:
    try:
        import nutpie
        from nutpie import compiled_pyfunc
    except ImportError as error:
        raise Unavailable(f"not run: nutpie is not installed ({error})") from error

    value_and_grad = density.value_and_grad

    def make_logp():
        def logp(u, **_):
            value, grad = value_and_grad(np.array(u))
            return float(value), np.asarray(grad, dtype=np.float64, order="C")

        return logp

    def make_expand(seed1, seed2, chain):
        return lambda u, **_: {"u": np.asarray(u, dtype=np.float64)}

    compiled = compiled_pyfunc.from_pyfunc(density.ndim, make_logp, make_expand, [np.dtype("float64")],
                                           [(density.ndim,)], ["u"])

    def run(seed: int) -> dict[str, Any]:
        trace = nutpie.sample(compiled, draws=draws, tune=warmup, chains=chains, cores=min(chains, 2), seed=seed,
                              progress_bar=False, target_accept=density.target, save_warmup=False)
        u = np.asarray(trace.posterior["u"].values)
        stats = trace.sample_stats
        return {"theta": density.to_theta(u), "gradients": int(np.asarray(stats["n_steps"]).sum()),
                "divergences": int(np.asarray(stats["diverging"]).sum())}

    return run


IMPLEMENTATIONS: dict[str, Callable[[Density, int, int, int], Runner]] = {
    "bayeshf": prepare_bayeshf,
    "numpyro": prepare_numpyro,
    "nutpie": prepare_nutpie,
}


def diagnose(result: dict[str, Any], names: list[str]) -> dict[str, float]:
    """min bulk / tail ESS, max R-hat and, where the model has it, the tail check of TAIL_PARAMETER."""
    from bayeshf.diagnostics import convergence_table

    theta = result["theta"]
    bulk, tail, rhat = convergence_table(theta)
    out = {"min_ess_bulk": float(np.nanmin(bulk)), "min_ess_tail": float(np.nanmin(tail)),
           "max_rhat": float(np.nanmax(rhat))}
    if TAIL_PARAMETER in names:
        x = theta[..., names.index(TAIL_PARAMETER)]
        out.update(p_below_minus_2=float((x < -2).mean()), quantile_1pct=float(np.quantile(x, 0.01)))
    return out


def measure(case: str, recorder: Recorder, *, implementations: list[str], seeds: list[int], chains: int,
            warmup: int, draws: int, data: str | None) -> None:
    """Each implementation cold once (compilation), then the seeds round robin across implementations."""
    density = Density(load_case(case, data))
    tags = {"sampler": "nuts", "chains": chains, "warmup": warmup, "steps": draws, "target": density.target,
            "seeds": len(seeds)}
    ready: dict[str, Runner] = {}
    for name in implementations:
        try:
            run = IMPLEMENTATIONS[name](density, chains, warmup, draws)
            run(seeds[0] + 10_000)  # compile and warm up outside the timed runs
            ready[name] = run
        except Unavailable as reason:
            recorder.skip(implementation=name, case=case, reason=str(reason))
        except Exception as error:  # a peer failing on a model is a result, not a crash
            recorder.skip(implementation=name, case=case, reason=f"failed: {type(error).__name__}: {error}"[:300])
    per_seed: dict[str, list[dict[str, float]]] = {name: [] for name in ready}
    for seed in progress(seeds, desc=f"samplers {case}"):
        for name, run in ready.items():
            start = time.perf_counter()
            result = run(seed)
            seconds = time.perf_counter() - start
            row = diagnose(result, density.names)
            ess = min(row["min_ess_bulk"], row["min_ess_tail"])
            row.update(seconds=seconds, gradients=result["gradients"], divergences=result["divergences"],
                       ess_per_kgrad=1000.0 * ess / max(result["gradients"], 1), ess_per_s=ess / seconds, seed=seed)
            per_seed[name].append(row)
    for name, rows in per_seed.items():
        for metric, unit in (("min_ess_bulk", "draws"), ("min_ess_tail", "draws"), ("ess_per_kgrad", "1/kgrad"),
                             ("ess_per_s", "1/s"), ("seconds", "s"), ("max_rhat", ""), ("divergences", "")):
            values = [r[metric] for r in rows]
            worst = max(values) if metric in ("seconds", "max_rhat", "divergences") else min(values)
            recorder.add(case=case, implementation=name, metric=metric, unit=unit, summary=summarize(values),
                         worst=worst, per_seed=values, **tags)
        if rows and "p_below_minus_2" in rows[0]:
            for metric in ("p_below_minus_2", "quantile_1pct"):
                values = [r[metric] for r in rows]
                recorder.add(case=case, implementation=name, metric=metric, unit="", summary=summarize(values),
                             per_seed=values, parameter=TAIL_PARAMETER, **tags)


def run(options: Any, recorder: Recorder) -> None:
    implementations = options.implementations or list(IMPLEMENTATIONS)
    if options.quick:
        plan = [("thesis_2_bin_corr", QUICK["seeds"])]
        chains, warmup, draws = QUICK["chains"], QUICK["warmup"], QUICK["draws"]
    else:
        cases = options.cases or ["ttbar_ljets", "sbottom_RegionA_1300_205_60", "nbin_20"]
        plan = [(case, SEEDS if case == "ttbar_ljets" else 4) for case in cases]
        chains, warmup, draws = CHAINS, WARMUP, (options.steps or [DRAWS])[0]
        previous = recorder.previous()
        if previous is not None:  # the cases not re-run keep their rows (ttbar alone takes an hour)
            others = sorted({r.get("case") for r in previous.get("rows", [])} - set(cases))
            recorder.carry_over(previous, others, key="case")
    for case, n_seeds in plan:
        measure(case, recorder, implementations=implementations,
                seeds=[options.seed + i for i in range(n_seeds)], chains=chains, warmup=warmup, draws=draws,
                data=options.data)


def _spread(row: dict[str, Any] | None, digits: str) -> str:
    """median [lowest, highest] over seeds of a per-seed row, or a dash."""
    if row is None or not row.get("per_seed"):
        return "–"
    values = row["per_seed"]
    return f"{np.median(values):{digits}} [{min(values):{digits}}, {max(values):{digits}}]"


def report_section(data: dict[str, Any], command: str, machine: str) -> list[str]:
    """The "Samplers on bayeshf's log-density" section of docs/benchmarks.md."""
    rows = data.get("rows", [])
    index = {(r["case"], r["implementation"], r["metric"]): r for r in rows}
    out = ["## Samplers on bayeshf's log-density", "",
           f"Reproduce: {command}. Machine: {machine}.", "",
           "NUTS of bayeshf, numpyro and nutpie on the same function (bayeshf's whitened log-density; only the "
           "sampler differs; benchmarks/samplers.py). ESS = min over parameters of bulk and of tail ESS; median "
           "over seeds, worst in brackets; ESS/kgrad per 1000 gradients of the kept draws; the tail check of ttbar "
           "(reference from well-mixed runs: P = 0.008-0.011, 1% quantile -1.98 +- 0.03) as median [lowest, highest] "
           "over seeds.", ""]
    header = ["case", "sampler", "chains x (warm-up + draws), seeds", "min bulk ESS", "min tail ESS",
              "ESS/kgrad", "ESS/s", "divergences (all seeds)", "max R-hat", "P(WjetsNorm_1b < -2)",
              "its 1% quantile"]
    out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    seen = []
    for case, name, metric in index:
        if metric == "ess_per_kgrad" and (case, name) not in seen:
            seen.append((case, name))
    for case, name in seen:
        def cell(metric, digits="3g"):
            row = index.get((case, name, metric))
            if row is None:
                return "–"
            worst = row.get("worst")
            return f"{row['median']:.{digits}}" + (f" ({worst:.{digits}})" if worst is not None else "")

        base = index[(case, name, "ess_per_kgrad")]
        tail = index.get((case, name, "p_below_minus_2"))
        divergences = index.get((case, name, "divergences"))
        out.append("| " + " | ".join([
            case, name, f"{base['chains']} x ({base['warmup']} + {base['steps']}), {base['seeds']}",
            cell("min_ess_bulk", "0f"), cell("min_ess_tail", "0f"), cell("ess_per_kgrad"), cell("ess_per_s"),
            "–" if divergences is None else str(int(sum(divergences.get("per_seed", [])))), cell("max_rhat", "4f"),
            _spread(tail, ".4f"), _spread(index.get((case, name, "quantile_1pct")), ".2f")]) + " |")
    return out + [""]
