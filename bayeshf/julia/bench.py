"""Julia runners for the benchmark harness: BAT+LiteHF, BAT+JAX callback, BAT+pyhf.

Each runner samples with BAT.jl's ``TransformedMCMC``; they differ only in the
likelihood BAT evaluates (priors are bayeshf's in all three):

- ``bat-litehf``: LiteHF.jl's ``pyhf_loglikelihoodof``, pure Julia (the thesis' Julia+LiteHF);
- ``bat-jax-callback``: bayeshf's jitted JAX value and gradient, called from Julia;
- ``bat-pyhf``: pyhf's main log-likelihood (jax backend) called from Julia (the thesis' Python+BAT).

Where Julia is missing, :func:`prepare` raises :class:`JuliaUnavailable`
and :func:`run` returns ``status="not run: Julia not found ..."``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from bayeshf.errors import BayeshfError

RUNNERS = ("bat-litehf", "bat-jax-callback", "bat-pyhf")
#: benchmark sampler name -> BAT proposal (BAT's HamiltonianMC uses AdvancedHMC's no-U-turn termination)
SAMPLERS = {"mh": "mh", "hmc": "hmc", "nuts": "hmc"}


class JuliaUnavailable(BayeshfError):
    """The runner cannot run here; the message starts with ``not run:``."""


@dataclass
class RunResult:
    """One BAT run: ``status`` is "ok" or "not run: ..."; ``draws`` (chains, draws, npars) when ok."""

    runner: str
    status: str
    seconds: float = float("nan")
    draws: np.ndarray | None = None
    details: dict[str, Any] = field(default_factory=dict)


def status(runner: str) -> str | None:
    """None when ``runner`` can run here, else the one-line "not run: ..." reason."""
    if runner not in RUNNERS:
        raise BayeshfError(f"unknown Julia runner {runner!r}; use one of {', '.join(RUNNERS)}.")
    from bayeshf.julia.environment import available

    ok, reason = available()
    return None if ok else f"not run: Julia not found ({reason.rstrip('.')})"


def _draws(idata) -> np.ndarray:
    posterior = idata.posterior
    columns = [np.asarray(posterior[name].values, dtype=float) for name in posterior.data_vars]
    return np.concatenate([c.reshape(c.shape[0], c.shape[1], -1) for c in columns], axis=-1)


def prepare(runner: str, model_or_spec, sampler: str, steps: int, *, chains: int = 2) -> Callable[[int], np.ndarray]:
    """``seed -> draws (chains, draws, npars)`` for ``runner``; raises :class:`JuliaUnavailable` where it cannot run."""
    reason = status(runner)
    if reason:
        raise JuliaUnavailable(reason)
    if sampler not in SAMPLERS:
        raise BayeshfError(f"BAT has no {sampler!r} sampler; use one of {', '.join(SAMPLERS)}.")
    import bayeshf
    from bayeshf.julia.sampling import sample

    model = model_or_spec if hasattr(model_or_spec, "log_likelihood") else bayeshf.load(model_or_spec)
    bat_sampler = SAMPLERS[sampler]
    if runner == "bat-litehf":
        return lambda seed: _draws(sample(model, likelihood="litehf", sampler=bat_sampler, chains=chains,
                                          steps=steps, seed=seed, prior_draws=0))
    if runner == "bat-jax-callback":
        return lambda seed: _draws(sample(model, likelihood="jax", sampler=bat_sampler, chains=chains,
                                          steps=steps, seed=seed, prior_draws=0))
    return lambda seed: _draws(_sample_pyhf(model, bat_sampler, chains, steps, seed))


def _sample_pyhf(model, sampler: str, chains: int, steps: int, seed: int):
    """BAT with pyhf's main log-likelihood as the callback (bayeshf priors)."""
    from bayeshf.julia.callback import pyhf_callback_adapter
    from bayeshf.julia.sampling import sample

    return sample(model, likelihood="jax", sampler=sampler, chains=chains, steps=steps, seed=seed, prior_draws=0,
                  callback=pyhf_callback_adapter(model))


def run(runner: str, model_or_spec, *, sampler: str = "hmc", steps: int = 10000, chains: int = 2,
        seed: int = 0) -> RunResult:
    """One timed run (cold: includes Julia start-up and compilation on the first call in a process)."""
    try:
        runner_fn = prepare(runner, model_or_spec, sampler, steps, chains=chains)
    except JuliaUnavailable as reason:
        return RunResult(runner, str(reason))
    start = time.perf_counter()
    draws = runner_fn(seed)
    return RunResult(runner, "ok", time.perf_counter() - start, draws,
                     {"sampler": sampler, "steps": steps, "chains": chains, "seed": seed})
