"""Signal grids: CLs and upper limits for every point of a patchset, fits batched by model structure.

Each point is the background-only workspace patched with one patch. Points
whose models share one structure (the usual case: only yields differ) are
stacked leaf-wise and fitted together in one compiled program
(:mod:`bayeshf.batchfit`); a point with another structure (say, a modifier the
others lack) goes to a batch of its own. The answers are those of the
single-point path (:func:`bayeshf.infer.hypotest`, :func:`bayeshf.infer.upper_limit`):
the same fits, test statistics (Cowan et al. 2011, pyhf's conventions) and
roots. A point whose fit does not converge is returned with an ``error``
sentence, never dropped. With ``scheduler`` the batches go to a Dask cluster
(:mod:`bayeshf.distributed`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import ndtr, ndtri

from bayeshf.batchfit import batch_minimize, fit_setup, stack_models, structure_key
from bayeshf.diagnostics import RHAT_MAX
from bayeshf.errors import BayeshfError
from bayeshf.fit import _finite_or_none
from bayeshf.teststats import BAND_SIGMAS

__all__ = ["GridPoint", "GridResult", "hypotest_grid", "upper_limit_grid", "credible_limit_grid", "evaluate_points"]

GRID_TEST_STATISTICS = ("qtilde", "q")
#: Bayesian grids: short chains per point (the program compiles once per model structure), extended towards
#: BAYES_TARGET_ESS (every parameter, R-hat < 1.01) within BAYES_MAX_TIME seconds per point
BAYES_CHAINS, BAYES_WARMUP, BAYES_DRAWS, BAYES_TARGET_ESS, BAYES_MAX_TIME = 4, 500, 500, 400, 120.0
#: a point's credible limit counts as converged with the POI's R-hat at most this and its tail ESS at least BAYES_MIN_ESS
BAYES_RHAT, BAYES_MIN_ESS = RHAT_MAX, BAYES_TARGET_ESS
BAYES_KEYS = ("upper_limit", "mcse", "credibility", "rhat", "rhat_max", "ess_bulk", "ess_tail", "draws", "converged",
              "warning")
#: points per batch (per Dask task): results reach the output file and the progress bar batch by batch
DEFAULT_BATCH = 32


@dataclasses.dataclass(frozen=True)
class GridPoint:
    """One point: ``CLs_obs``/``CLs_exp`` (kind "cls") or ``obs``/``exp`` (kind "limit"), or an ``error``.

    A limit point whose error is that some limits lie above the POI's upper bound keeps the limits found
    (None for the others) and ``poi_bound``, the bound they lie above.
    """

    patch: str
    values: tuple[float, ...]
    CLs_obs: float | None = None
    CLs_exp: tuple[float, ...] | None = None
    obs: float | None = None
    exp: tuple[float, ...] | None = None
    error: str | None = None
    poi_bound: float | None = None
    bayes: Mapping[str, Any] | None = None  # kind "bayesian": upper_limit, mcse, credibility, R-hat, ESS, converged

    def to_dict(self, kind: str) -> dict[str, Any]:
        out: dict[str, Any] = {"patch": self.patch, "values": list(self.values)}
        if self.error is None and kind == "bayesian":
            out.update(self.bayes)
        elif self.error is not None:
            out["error"] = self.error
            if self.poi_bound is not None:
                out.update({"obs": self.obs, "exp": list(self.exp), "poi_bound": self.poi_bound})
        elif kind == "cls":
            out.update({"CLs_obs": self.CLs_obs, "CLs_exp": list(self.CLs_exp)})
        else:
            out.update({"obs": self.obs, "exp": list(self.exp)})
        return out


@dataclasses.dataclass(frozen=True)
class GridResult:
    """All points of a grid; ``to_list()`` is the JSON the CLI writes, ``table()`` a pandas-free column dict.

    ``kind``: "cls", "limit" (CLs upper limits) or "bayesian" (credible upper limits).
    """

    kind: str
    labels: tuple[str, ...]
    points: tuple[GridPoint, ...]
    test_stat: str = "qtilde"
    poi_value: float | None = None

    def to_list(self) -> list[dict[str, Any]]:
        return [p.to_dict(self.kind) for p in self.points]

    def table(self) -> dict[str, list]:
        """Columns: patch, one per label, then CLs_obs + CLs_exp_m2..p2 (or obs + exp_m2..p2) and error."""
        columns: dict[str, list] = {"patch": [p.patch for p in self.points]}
        for i, label in enumerate(self.labels):
            columns[label] = [p.values[i] if i < len(p.values) else None for p in self.points]
        if self.kind == "bayesian":
            for key in BAYES_KEYS:
                columns[key] = [None if p.bayes is None else p.bayes.get(key) for p in self.points]
            columns["error"] = [p.error for p in self.points]
            return columns
        head, band = ("CLs_obs", "CLs_exp") if self.kind == "cls" else ("obs", "exp")
        columns[head] = [getattr(p, head) for p in self.points]
        for j, tag in enumerate(("m2", "m1", "0", "p1", "p2")):  # the band in pyhf's order
            columns[f"{band}_{tag}"] = [None if getattr(p, band) is None else getattr(p, band)[j] for p in self.points]
        columns["error"] = [p.error for p in self.points]
        return columns


# ---------------------------------------------------------------------------------------------
# batched pieces


@functools.partial(jax.jit, static_argnums=0)
def _asimov_batch(static, arrays, pars):
    from bayeshf.model import _expected_auxdata, _expected_counts

    def one(a, x):
        return jnp.concatenate([_expected_counts(a, static, x), _expected_auxdata(a, static, x)])

    return jax.vmap(one)(arrays, pars)


def _tile(arrays, times: int):
    return jax.tree_util.tree_map(lambda leaf: jnp.concatenate([leaf] * times), arrays)


def _own_data(arrays) -> np.ndarray:
    return np.concatenate([np.asarray(arrays.observed), np.asarray(arrays.auxdata)], axis=1)


class _Group:
    """Points of one structure: stacked arrays, their data, and the fits a test needs (batched)."""

    def __init__(self, models: Sequence[Any]):
        self.model = models[0]
        self.n = len(models)
        self.arrays = stack_models(models)
        self.data = _own_data(self.arrays)
        self.poi = int(self.model.poi_index)
        self.init = np.asarray(self.model.init, float)

    def fits(self, jobs: Sequence[tuple[np.ndarray, np.ndarray, float | None]], width: int):
        """Run ``jobs`` (start (n, npars), data (n, ndata), fixed POI value per point or None) in one call.

        Every call is padded to ``width`` blocks of n points, so one compiled program serves them all.
        """
        blocks = list(jobs) + [jobs[0]] * (width - len(jobs))
        x0, data, mask, values = [], [], [], []
        lo = hi = None
        for start, d, poi_value in blocks:
            for i in range(self.n):
                pv = None if poi_value is None else float(np.broadcast_to(poi_value, (self.n,))[i])
                m, v, lo, hi = fit_setup(self.model, pv)
                mask.append(m)
                values.append(v)
            s = np.array(start, dtype=float)
            if poi_value is not None:
                s[:, self.poi] = np.broadcast_to(poi_value, (self.n,))
            x0.append(s)
            data.append(d)
        result = batch_minimize(self.model, np.concatenate(x0), np.concatenate(data), np.array(mask),
                                np.array(values), lo, hi, arrays=_tile(self.arrays, width))
        n = self.n
        return [result.take(slice(k * n, (k + 1) * n)) for k in range(len(jobs))]


def _statistic(free, conditional, poi, poi_value):
    """q or q~ as bayeshf.teststats: 0 when the free fit is at or above the tested value."""
    muhat = free.bestfit[:, poi]
    t = np.maximum(conditional.twice_nll - free.twice_nll, 0.0)
    t = np.where(muhat == poi_value, 0.0, t)
    return np.where(muhat > poi_value, 0.0, t)


def _cls(q, q_asimov, test_stat):
    """Observed CLs and the expected band (pyhf order) from q and q_A (Cowan et al. 2011, eq. (66) for q~)."""
    sq, sqa = np.sqrt(q), np.sqrt(q_asimov)
    with np.errstate(divide="ignore", invalid="ignore"):
        shifted = np.where((test_stat == "q") | (sq <= sqa), sq - sqa, (q - q_asimov) / (2.0 * sqa))
    clsb, clb = ndtr(-(shifted + sqa)), ndtr(-shifted)
    band = np.array([ndtr(-(n + sqa)) / ndtr(-n) for n in BAND_SIGMAS]).T
    return clsb / clb, band


class _Tester:
    """The asymptotic calculator of bayeshf.teststats for a group of points at once."""

    def __init__(self, group: _Group, test_stat: str):
        self.g, self.test_stat = group, test_stat
        g = group
        start = np.tile(g.init, (g.n, 1))
        self.free, self.zero = g.fits([(start, g.data, None), (start, g.data, 0.0)], width=3)
        self.asimov = np.asarray(_asimov_batch(g.model._static, g.arrays, self.zero.bestfit))
        (self.free_asimov,) = g.fits([(self.zero.bestfit, self.asimov, None)], width=3)
        self.failed = _failures([("free fit", self.free), ("fit at mu = 0", self.zero),
                                 ("free fit to the Asimov data", self.free_asimov)], g.model.poi_name)

    def conditional(self, poi_values):
        """Fits at the POI values (one per point) to the observed and the Asimov data."""
        g = self.g
        obs, asimov = g.fits([(self.free.bestfit, g.data, poi_values),
                              (self.free_asimov.bestfit, self.asimov, poi_values)], width=3)
        return obs, asimov

    def cls(self, poi_values):
        obs, asimov = self.conditional(poi_values)
        q = _statistic(self.free, obs, self.g.poi, poi_values)
        q_a = _statistic(self.free_asimov, asimov, self.g.poi, poi_values)
        cls_obs, band = _cls(q, q_a, self.test_stat)
        failed = _failures([("fit at the tested POI value", obs), ("Asimov fit at the tested POI value", asimov)],
                           self.g.model.poi_name)
        return cls_obs, band, q_a, failed


def _failures(named, poi_name) -> list[str | None]:
    n = len(named[0][1].converged)
    out: list[str | None] = [None] * n
    for what, result in named:
        for i in np.flatnonzero(~result.converged):
            if out[i] is None:
                out[i] = f"the {what} did not converge (EDM {result.edm[i]:.3g}); no CLs from a failed fit."
    return out


def _merge(*lists):
    return [next((e for e in items if e is not None), None) for items in zip(*lists)]


def _group_cls(models, poi_value, test_stat):
    tester = _Tester(_Group(models), test_stat)
    cls_obs, band, _, failed = tester.cls(np.full(len(models), float(poi_value)))
    return [dict(CLs_obs=float(c), CLs_exp=tuple(float(v) for v in b), error=e)
            for c, b, e in zip(cls_obs, band, _merge(tester.failed, failed))]


def _group_limits(models, test_stat, level=0.05, maxiter=40, rtol=1e-9):
    """Observed and expected limits of every point: five + one roots per point solved together."""
    tester = _Tester(_Group(models), test_stat)
    g = tester.g
    n = g.n
    lo_bound, hi_bound = np.asarray(g.model.bounds, float)[g.poi]
    floor = max(lo_bound, 0.0)
    # sigma_A from q_A at one POI value (Cowan et al. 2011, eq. (31)); doubled until the signal shows
    mu = np.full(n, floor + 0.1 * (hi_bound - floor))
    sigma = np.full(n, np.nan)
    errors = list(tester.failed)
    for _ in range(20):
        _, _, q_a, _ = tester.cls(mu)
        ok = q_a > 1e-6
        sigma = np.where(np.isnan(sigma) & ok, (mu - floor) / np.sqrt(np.where(ok, q_a, 1.0)), sigma)
        if not np.any(np.isnan(sigma)):
            break
        mu = np.where(np.isnan(sigma), floor + 2.0 * (mu - floor), mu)
    targets = np.array([-ndtri(level * ndtr(-s)) - s for s in BAND_SIGMAS])  # sqrt(q_A) at each expected root
    muhat = np.maximum(tester.free.bestfit[:, g.poi], floor)
    seeds = np.concatenate([floor + np.outer(targets, sigma), (muhat + targets[2] * sigma)[None, :]])  # (6, n)
    seeds = np.where(np.isfinite(seeds), seeds, floor + 1.0)
    seeds = np.clip(seeds, floor + 1e-9 * max(1.0, abs(floor)), hi_bound)

    def evaluate(x):  # x (6, n): expected roots 0..4, observed root 5; all fits of a step in one call
        jobs = [(tester.free_asimov.bestfit, tester.asimov, x[k]) for k in range(6)]
        fits = g.fits(jobs + [(tester.free.bestfit, g.data, x[5])], width=7)
        out = np.empty_like(x)
        for k in range(5):
            out[k] = np.sqrt(_statistic(tester.free_asimov, fits[k], g.poi, x[k])) - targets[k]
        q = _statistic(tester.free, fits[6], g.poi, x[5])
        q_a = _statistic(tester.free_asimov, fits[5], g.poi, x[5])
        cls_obs, _ = _cls(q, q_a, test_stat)
        out[5] = ndtri(level) - ndtri(np.maximum(cls_obs, 1e-300))
        return out, _failures([(f"fit of the limit search", f) for f in fits], None)

    roots, beyond, failed = _solve(evaluate, seeds, sigma, floor, hi_bound, maxiter, rtol)
    errors = _merge(errors, failed)
    out = []
    for i in range(n):
        partial = None
        if errors[i] is None and np.any(beyond[:, i]):
            errors[i] = _above_bound_sentence(beyond[:, i], level, hi_bound, g.model.poi_name)
            partial = hi_bound  # the limits found are kept, the others lie above the bound
        elif errors[i] is None and not np.all(np.isfinite(roots[:, i])):
            errors[i] = f"the CLs upper limit search did not converge in {maxiter} steps."
        out.append(dict(obs=_finite_or_none(roots[5, i]), exp=tuple(_finite_or_none(v) for v in roots[:5, i]), error=errors[i],
                        poi_bound=partial))
    return out


def _above_bound_sentence(beyond, level, bound, poi_name) -> str:
    """Which limits (observed; expected at -2 ... +2 sigma) lie above the POI's upper bound, in one sentence."""
    parts = ["the observed limit"] if beyond[5] else []
    sigmas = [("0" if k == 2 else f"{k - 2:+d}") for k in range(5) if beyond[k]]
    if sigmas:
        listed = sigmas[0] if len(sigmas) == 1 else ", ".join(sigmas[:-1]) + " and " + sigmas[-1]
        parts.append(f"the expected limit{'s' if len(sigmas) > 1 else ''} at {listed} sigma")
    return (f"CLs stays above {level:g} up to mu = {bound:g} (the POI's upper bound) for {' and '.join(parts)}; "
            f"raise the POI bound (the measurement's \"bounds\" of {poi_name}) to find "
            f"{'it' if sum(beyond) == 1 else 'them'}.")


def _solve(evaluate, x, sigma, floor, ceiling, maxiter, rtol, ftol=1e-10):
    """Roots of increasing functions in (floor, ceiling], all at once: secant steps inside the bracket, else bisection.

    A root is found when the bracket is narrower than ``rtol`` (relative) or ``|g| <= ftol``: g is sqrt(q) or
    a probit, whose noise from fits converged to 1e-10 in twice_nll is about 1e-11.

    Returns (roots, beyond, failures): ``beyond`` marks functions still below 0 at the ceiling (no root, NaN).
    """
    lo_x = np.full(x.shape, -np.inf)
    hi_x = np.full(x.shape, np.inf)
    lo_g = np.full(x.shape, np.nan)
    hi_g = np.full(x.shape, np.nan)
    prev_x = prev_g = None
    done = np.zeros(x.shape, dtype=bool)
    beyond = np.zeros(x.shape, dtype=bool)
    slow = np.zeros(x.shape, dtype=int)  # bracketed steps in a row that did not halve the bracket
    width = np.full(x.shape, np.inf)
    result = np.full(x.shape, np.nan)
    failures = [None] * x.shape[1]
    at_floor = 1e-12 * max(1.0, abs(floor))
    for _ in range(maxiter):
        g, bad = evaluate(x)
        failures = _merge(failures, bad)
        below, above = g < 0, g > 0
        lo_x, lo_g = np.where(below & (x > lo_x), x, lo_x), np.where(below & (x > lo_x), g, lo_g)
        hi_x, hi_g = np.where(above & (x < hi_x), x, hi_x), np.where(above & (x < hi_x), g, hi_g)
        exact = np.abs(g) <= ftol
        bracketed = np.isfinite(lo_x) & np.isfinite(hi_x)
        narrow = bracketed & (hi_x - lo_x <= rtol * np.maximum(np.abs(hi_x), 1e-12))
        interpolated = np.where(bracketed, lo_x - lo_g * (hi_x - lo_x) / (hi_g - lo_g), x)
        top = ~done & below & (x >= ceiling)  # no root below the POI's upper bound
        bottom = ~done & above & (x - floor <= at_floor)  # the root is the floor (as bayeshf.limits)
        newly = ~done & (exact | narrow | bottom)
        result = np.where(newly, np.where(narrow & ~exact, interpolated, x), result)
        beyond |= top
        done |= newly | top
        if np.all(done):
            break
        if prev_x is None:  # first step: slope 1/sigma_A (sqrt(q_A) ~ mu / sigma_A)
            step = x - g * sigma[None, :]
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                slope = (g - prev_g) / (x - prev_x)
                step = np.where(np.isfinite(slope) & (slope > 0), x - g / slope, x - g * sigma[None, :])
        # inside a known bracket (bisect if the secant leaves it or stops halving it); beyond: at most doubling
        with np.errstate(invalid="ignore"):  # inf - inf where a side of the bracket is unknown yet
            new_width = hi_x - lo_x
            slow = np.where(bracketed & (new_width > 0.5 * width), slow + 1, 0)
            width = new_width
            inside = (step > lo_x) & (step < hi_x) & (slow < 3)
        step = np.where(bracketed, np.where(inside, step, 0.5 * (lo_x + hi_x)), step)
        step = np.where(~np.isfinite(hi_x) & (step <= np.where(np.isfinite(lo_x), lo_x, floor)),
                        np.where(np.isfinite(lo_x), 2.0 * lo_x - floor + 1e-3, x), step)
        step = np.where(~np.isfinite(lo_x) & (step <= floor), floor + 0.5 * (x - floor), step)
        # a step below the noise of g (fits converge to ~1e-10 in twice_nll) stalls: step at least half the
        # tolerance towards the root, so that the next value closes a bracket narrower than the tolerance
        tiny = 0.5 * rtol * np.maximum(np.abs(x), 1e-12)
        step = np.where(np.abs(step - x) < tiny, x + np.where(below, tiny, -tiny), step)
        step = np.minimum(step, ceiling)
        prev_x, prev_g = x, g
        x = np.where(done, x, step)
    return result, beyond, failures


# ---------------------------------------------------------------------------------------------
# points -> models -> answers


def build_models(spec: Mapping[str, Any], points, *, label: str, measurement: str | None = None,
                 codes: Mapping[str, str] | None = None, poi_name: str | None = None):
    """Each point's patched model, or the sentence saying why it cannot be built."""
    import jsonpatch

    from bayeshf.model import HistFactoryModel
    from bayeshf.workspace import select_measurement, validate

    out = []
    for point in points:
        try:
            patched = jsonpatch.JsonPatch(point.operations).apply(spec)
            where = f"{label} patched with {point.name}"
            validate(patched, where)
            chosen = select_measurement(patched, where, measurement)
            out.append(HistFactoryModel.from_spec(patched, measurement=chosen, codes=codes, label=where,
                                                  poi_name=poi_name))
        except BayeshfError as error:
            out.append(str(error))
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, KeyError, TypeError) as error:
            out.append(f"{point.name}: patch does not apply to {label} ({error}).")
    return out


def evaluate_points(spec: Mapping[str, Any], points, settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Answers for ``points`` (PatchPoint-like: name, values, operations), batched by model structure.

    ``settings``: kind ("cls" or "limit"), poi_value, test_stat, level, label,
    measurement, codes, poi_name. Pure and picklable: the Dask workers run it.
    """
    models = build_models(spec, points, label=settings.get("label", "<workspace>"),
                          measurement=settings.get("measurement"), codes=settings.get("codes"),
                          poi_name=settings.get("poi_name"))
    answers: list[dict[str, Any] | None] = [None] * len(points)
    groups: dict[tuple, list[int]] = {}
    if settings["kind"] == "bayesian":
        settings = dict(settings, pad_to=1)  # sampled one point at a time: no padding
    for i, model in enumerate(models):
        if isinstance(model, str):
            answers[i] = {"error": model}
        elif model.poi_index is None:
            answers[i] = {"error": f"{model.label}: the model has no parameter of interest."}
        else:
            groups.setdefault(structure_key(model), []).append(i)
    pad_to = int(settings.get("pad_to") or 1)
    for members in groups.values():
        group = [models[i] for i in members]
        # ghost copies of the last point fill the group to a multiple of pad_to: one compiled shape per batch size
        group = group + [group[-1]] * (-len(group) % pad_to)
        if settings["kind"] == "bayesian":
            results = [_credible_limit(m, settings, _TEMPLATES) for m in group]
        elif settings["kind"] == "cls":
            results = _group_cls(group, settings.get("poi_value", 1.0), settings.get("test_stat", "qtilde"))
        else:
            results = _group_limits(group, settings.get("test_stat", "qtilde"), settings.get("level", 0.05))
        for i, r in zip(members, results):
            answers[i] = r
    return [dict(patch=p.name, values=tuple(p.values), **a) for p, a in zip(points, answers)]


#: posteriors whose compiled chain programs later points of equal priors reuse (per process: a Dask worker
#: keeps them between tasks); the last few only, as each holds a model
_TEMPLATES: list = []
_MAX_TEMPLATES = 8


def _posterior(model, templates: list):
    """The model's posterior; one sharing a template's prior set (and so its compiled programs) when the priors
    are equal: the program takes the model as an argument but holds the prior parameters as constants."""
    from bayeshf.priors import build_priors
    from bayeshf.sampling import posterior_for

    priors = build_priors(model)
    for template in templates:
        if template.prior_set.entries == priors.entries and structure_key(template.model) == structure_key(model):
            # the model's arrays under the template's pytree metadata (held by identity in the program's key):
            # the log density reads the arrays and the static code only, as with_data's copies do
            shared = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template.model),
                                                  jax.tree_util.tree_leaves(model))
            return template.with_model(shared)
    posterior = posterior_for(model)
    templates.append(posterior)
    del templates[:-_MAX_TEMPLATES]
    return posterior


def _credible_limit(model, settings: Mapping[str, Any], templates: list) -> dict[str, Any]:
    """One point's one-sided credible upper limit on the POI from short NUTS chains (bayeshf.sampling)."""
    from bayeshf.diagnostics import convergence_table, credible_upper_limit
    from bayeshf.sampling import run_chains

    posterior = _posterior(model, templates)
    free = list(np.asarray(posterior.free_index))
    if model.poi_index not in free:
        return {"error": f"{model.label}: the POI {model.poi_name} is fixed; there is nothing to sample."}
    raw = run_chains(posterior, chains=BAYES_CHAINS, warmup=BAYES_WARMUP, draws=BAYES_DRAWS,
                     seed=int(settings.get("seed", 0)), progress=False, target_ess=BAYES_TARGET_ESS,
                     max_time=BAYES_MAX_TIME)
    if raw.interrupted:  # a point with cut-short chains is not a result: stop the grid, keep the points done
        raise KeyboardInterrupt
    theta = np.asarray(raw.stats.theta)  # (chains, draws, free parameters)
    credibility = 1.0 - float(settings.get("level", 0.05))
    j = free.index(model.poi_index)
    limit, mcse = credible_upper_limit(theta[..., j], credibility)
    bulk, tail, rhat = convergence_table(theta)
    converged = bool(rhat[j] <= BAYES_RHAT and min(bulk[j], tail[j]) >= BAYES_MIN_ESS)
    bayes = {"upper_limit": limit, "mcse": mcse, "credibility": credibility, "rhat": float(rhat[j]),
             "rhat_max": float(np.nanmax(rhat)), "ess_bulk": float(bulk[j]), "ess_tail": float(tail[j]),
             "draws": int(theta.shape[0] * theta.shape[1]), "converged": converged}
    if not converged:
        bayes["warning"] = (f"the chains of {model.poi_name} did not converge (R-hat {rhat[j]:.3f}, bulk/tail ESS "
                            f"{bulk[j]:.0f}/{tail[j]:.0f}; wanted R-hat <= {BAYES_RHAT}, ESS >= {BAYES_MIN_ESS}): "
                            "run this point alone with bayeshf sample --patch and more draws.")
    return {"bayes": bayes}


def _to_point(answer: Mapping[str, Any]) -> GridPoint:
    if answer.get("bayes") is not None and not answer.get("error"):
        return GridPoint(answer["patch"], tuple(answer["values"]), bayes=answer["bayes"])
    if answer.get("error"):
        if answer.get("poi_bound") is not None:
            return GridPoint(answer["patch"], tuple(answer["values"]), obs=answer["obs"], exp=answer["exp"],
                             error=answer["error"], poi_bound=answer["poi_bound"])
        return GridPoint(answer["patch"], tuple(answer["values"]), error=answer["error"])
    return GridPoint(answer["patch"], tuple(answer["values"]), CLs_obs=answer.get("CLs_obs"),
                     CLs_exp=answer.get("CLs_exp"), obs=answer.get("obs"), exp=answer.get("exp"))


def _run(workspace, patchset, patches, settings, *, scheduler=None, batch_size=None, progress=False,
         on_points: Callable[[list[GridPoint]], None] | None = None, verify=True) -> GridResult:
    from bayeshf.patchsets import read_patchset
    from bayeshf.workspace import read_json, validate

    spec, label = read_json(workspace, "workspace")
    validate(spec, label)
    ps = patchset if hasattr(patchset, "points") else read_patchset(patchset)
    if verify:
        ps.verify(spec, label)
    points = ps.select(patches)
    settings = dict(settings, label=label)
    if settings.get("test_stat", "qtilde") not in GRID_TEST_STATISTICS:
        raise BayeshfError(f"grids test with qtilde or q, not {settings['test_stat']!r}.")
    size = batch_size or (DEFAULT_BATCH if scheduler is None else max(1, min(DEFAULT_BATCH, -(-len(points) // 4))))
    n_batches = -(-len(points) // max(1, size))
    size = -(-len(points) // max(1, n_batches))  # equal batches (the last one padded): one compiled shape
    batches = [points[i:i + size] for i in range(0, len(points), size)]
    settings["pad_to"] = size
    done: list[GridPoint] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(points), unit="point", desc=f"grid ({settings['kind']})", leave=False)
    try:
        if scheduler is None:
            stream = (evaluate_points(spec, batch, settings) for batch in batches)
        else:
            from bayeshf.distributed import run_batches

            stream = run_batches(scheduler, evaluate_points, spec, batches, settings)
        for answers in stream:
            new = [_to_point(a) for a in answers]
            done.extend(new)
            if bar is not None:
                bar.update(len(new))
            if on_points is not None:
                on_points(list(done))
    finally:
        if bar is not None:
            bar.close()
    order = {p.name: i for i, p in enumerate(points)}
    done.sort(key=lambda p: order[p.patch])
    return GridResult(kind=settings["kind"], labels=ps.labels, points=tuple(done),
                      test_stat=settings.get("test_stat", "qtilde"), poi_value=settings.get("poi_value"))


def hypotest_grid(workspace: Any, patchset: Any, patches: Sequence[str] | None = None, *, poi_value: float = 1.0,
                  test_stat: str = "qtilde", measurement: str | None = None, codes: Mapping[str, str] | None = None,
                  poi_name: str | None = None, scheduler: Any = None, batch_size: int | None = None,
                  progress: bool = False, on_points=None, verify: bool = True) -> GridResult:
    """Asymptotic CLs at ``poi_value`` for every point of ``patchset`` (or the named ``patches``).

    ``workspace``: the background-only workspace (path or spec); ``patchset``:
    a path, a document or a :class:`~bayeshf.patchsets.Patchset`. ``scheduler``:
    a Dask scheduler address or ``distributed.Client`` (None: in-process).
    """
    settings = dict(kind="cls", poi_value=float(poi_value), test_stat=test_stat, measurement=measurement,
                    codes=codes, poi_name=poi_name)
    return _run(workspace, patchset, patches, settings, scheduler=scheduler, batch_size=batch_size,
                progress=progress, on_points=on_points, verify=verify)


def upper_limit_grid(workspace: Any, patchset: Any, patches: Sequence[str] | None = None, *, level: float = 0.05,
                     test_stat: str = "qtilde", measurement: str | None = None, codes: Mapping[str, str] | None = None,
                     poi_name: str | None = None, scheduler: Any = None, batch_size: int | None = None,
                     progress: bool = False, on_points=None, verify: bool = True) -> GridResult:
    """Observed and expected (5) CLs upper limits on the POI for every point (see :func:`hypotest_grid`)."""
    if not 0.0 < level < 1.0:
        raise BayeshfError(f"the CLs level must lie in (0, 1), got {level}.")
    settings = dict(kind="limit", level=float(level), test_stat=test_stat, measurement=measurement, codes=codes,
                    poi_name=poi_name)
    return _run(workspace, patchset, patches, settings, scheduler=scheduler, batch_size=batch_size,
                progress=progress, on_points=on_points, verify=verify)


def credible_limit_grid(workspace: Any, patchset: Any, patches: Sequence[str] | None = None, *, level: float = 0.05,
                        seed: int = 0, measurement: str | None = None, codes: Mapping[str, str] | None = None,
                        poi_name: str | None = None, scheduler: Any = None, batch_size: int | None = None,
                        progress: bool = False, on_points=None, verify: bool = True) -> GridResult:
    """The one-sided ``1 - level`` credible upper limit on the POI for every point (Bayesian; kind "bayesian").

    Each point: NUTS with bayeshf's derived priors (flat on the POI's bounds), BAYES_CHAINS chains of
    BAYES_WARMUP + BAYES_DRAWS steps, extended towards BAYES_TARGET_ESS; points of one model structure reuse
    one compiled program. Every point reports the limit, its Monte Carlo error, the POI's R-hat and ESS
    and ``converged`` (with a ``warning`` sentence when False). Same ``seed``: same draws, in-process or on Dask.
    """
    if not 0.0 < level < 1.0:
        raise BayeshfError(f"the credibility level must lie in (0, 1), got {level}.")
    settings = dict(kind="bayesian", level=float(level), seed=int(seed), measurement=measurement, codes=codes,
                    poi_name=poi_name)
    # a point takes seconds: one per batch, so the output file and the progress bar move with every point
    return _run(workspace, patchset, patches, settings, scheduler=scheduler, batch_size=batch_size or 1,
                progress=progress, on_points=on_points, verify=verify)
