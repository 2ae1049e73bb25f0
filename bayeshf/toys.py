"""Toy-based hypothesis tests (pyhf's ``calctype="toybased"``), every toy fit batched.

As pyhf's ``ToyCalculator``: pseudo-data are drawn at the conditional fits to
the observed data at the tested POI value (s+b) and at mu = 0 (b): main bins
Poisson at the expected counts, auxiliary data from the constraint terms
(normal around the parameter with its width, Poisson at tau * gamma). Each toy
gets a free and a fixed-POI fit; the test statistic's distributions under s+b
and b give CLs+b, CLb and CLs of the observed statistic (right tails, ``>=``),
and the expected band is read at the percentiles 2.28, 15.9, 50, 84.1, 97.7
of the p-values of the b-only toys. All fits of a chunk of toys run in one
compiled program (:mod:`bayeshf.batchfit`); a toy whose fits do not converge
is counted in ``n_failed`` and left out of the distributions (never silently).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import ndtr

from bayeshf import batchfit
from bayeshf.batchfit import BatchFitResult, batch_minimize, fit_setup
from bayeshf.errors import BayeshfError
from bayeshf.fit import MIRROR_MARGIN, MIRROR_RATIO, MIRROR_SCALE, several_valley_parameters
from bayeshf.model import _logpdf
from bayeshf.teststats import BAND_SIGMAS, CLsValues
from bayeshf._display import display

__all__ = ["ToyHypoTestResult", "ToyUpperLimitResult", "ToyMinima", "hypotest", "upper_limit", "sample_toys",
           "toy_minima", "several_valley_parameters", "TOY_TEST_STATISTICS"]

TOY_TEST_STATISTICS = ("qtilde", "q")
#: percentiles of the b-only p-values for the expected band (-2 ... +2 sigma of a normal), pyhf's
BAND_PERCENTILES = tuple(100.0 * float(ndtr(-n)) for n in BAND_SIGMAS)
#: fits per compiled call: small enough that the batch's BFGS matrices stay in cache (docs/frequentist.md, Toys)
CHUNK = 256


@display()
@dataclasses.dataclass(frozen=True)
class ToyHypoTestResult(CLsValues):
    """CLs from toys at one POI value; ``q_sb`` / ``q_b`` hold the test statistic of every toy (NaN: failed fit)."""

    ntoys: int
    seed: int
    n_failed: int
    q_sb: np.ndarray
    q_b: np.ndarray
    calctype: str = "toybased"

    def to_dict(self) -> dict[str, Any]:
        values = super().to_dict()
        return {"poi_value": values["poi_value"], "test_stat": values["test_stat"], "calctype": self.calctype,
                **values, "ntoys": self.ntoys, "seed": self.seed, "failed_toys": self.n_failed}


def _check(ntoys: Any, test_stat: str) -> int:
    if isinstance(ntoys, bool) or not isinstance(ntoys, (int, np.integer)) or int(ntoys) <= 0:
        raise BayeshfError(f"--ntoys must be a positive whole number of toys, got {ntoys!r}.")
    if test_stat not in TOY_TEST_STATISTICS:
        raise BayeshfError(f"the toybased calculator supports the test statistics {' and '.join(TOY_TEST_STATISTICS)}, "
                           f"not {test_stat!r} (use --calctype asymptotics for it).")
    return int(ntoys)


def sample_toys(model: Any, pars: np.ndarray, ntoys: int, rng: np.random.Generator) -> np.ndarray:
    """``ntoys`` pseudo-data sets (main + aux) at ``pars``, drawn as pyhf's ``model.make_pdf(pars).sample``."""
    a = model.arrays
    pars = np.asarray(pars, dtype=float)
    expected = np.asarray(model.expected_counts(pars), dtype=float)
    main = rng.poisson(np.clip(expected, 0.0, None), size=(ntoys, expected.size)).astype(float)
    aux = np.broadcast_to(np.asarray(model.auxdata, float), (ntoys, model.nauxdata)).copy()
    normal_param = np.asarray(a.normal_param)
    if normal_param.size:
        sigma = 1.0 / np.sqrt(np.asarray(a.normal_weight)[normal_param])
        aux[:, np.asarray(a.normal_aux_position)] = rng.normal(pars[normal_param], sigma, size=(ntoys, normal_param.size))
    poisson_param = np.asarray(a.poisson_param)
    if poisson_param.size:
        rate = pars[poisson_param] * np.asarray(a.poisson_factor)
        aux[:, np.asarray(a.poisson_aux_position)] = rng.poisson(rate, size=(ntoys, poisson_param.size))
    return np.concatenate([main, aux], axis=1)


def _observed_fits(model: Any, poi_value: float, data: np.ndarray, test_stat: str):
    """Free fit and the conditional fits at ``poi_value`` and 0 on the observed data (single-fit path)."""
    from bayeshf.fit import fit

    free = fit(model, data=data)
    reference = free if free.success else None
    at_test = fit(model, data=data, fixed={model.poi_name: poi_value}, init=free.bestfit, reference=reference)
    at_zero = at_test if poi_value == 0.0 else fit(model, data=data, fixed={model.poi_name: 0.0}, init=free.bestfit,
                                                   reference=reference)
    for name, result in (("free", free), (f"{model.poi_name} = {poi_value:g}", at_test), (f"{model.poi_name} = 0", at_zero)):
        if not result.success:
            raise BayeshfError(f"the {name} fit to the observed data did not converge ({result.message}); "
                               "no toys are drawn from a failed fit.")
    return free, at_test, at_zero


def _statistic(free_nll, fixed_nll, muhat, poi_value):
    q = np.maximum(fixed_nll - free_nll, 0.0)
    return np.where(muhat > poi_value, 0.0, q)


def toy_statistics(model: Any, poi_value: float, toys: np.ndarray, start: np.ndarray, *,
                   progress: Any = None, chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Test statistic of each toy (NaN where a fit failed) and the converged flags (fits: :func:`toy_minima`)."""
    m = toy_minima(model, poi_value, toys, start, progress=progress, chunk=chunk)
    q = _statistic(m.free_nll, m.fixed_nll, m.free_x[:, model.poi_index], poi_value)
    return np.where(m.converged, q, np.nan), m.converged


class ToyMinima(NamedTuple):
    """Per toy: the free and fixed-POI minima (twice_nll and point) and whether both fits converged."""

    free_nll: np.ndarray
    fixed_nll: np.ndarray
    free_x: np.ndarray
    fixed_x: np.ndarray
    converged: np.ndarray


def toy_minima(model: Any, poi_value: float, toys: np.ndarray, start: np.ndarray, *,
               progress: Any = None, chunk: int = CHUNK) -> ToyMinima:
    """Free and fixed-POI minima of each toy (twice_nll and point) and the converged flags.

    The fits run batched in chunks. Each toy's free and fixed-POI fits run twice: from ``start`` (the generating point), then each from
    the other's minimum (the free fit from the conditional one with the POI released, the conditional
    from the free one with the POI set), and the lower converged minimum is kept: a toy's likelihood
    can have two valleys (about 2% of sbottom's toys), and one start finds the upper one. BFGS fits
    (``batchfit``'s quasi-Newton) do the work, from the scoring matrix's inverse at ``start``, and the
    second start from the first's final inverse of the same toy and fit; a fit that converges from
    neither start is retried with exact Newton steps before the toy is counted as failed.

    On a model with parameters along which the likelihood can have several valleys
    (:func:`several_valley_parameters`), mirror probes replace the second start: each fit's twice_nll
    is evaluated at the mirror image of each such parameter (:func:`_probe`), the fits whose probes
    suggest a lower valley are refitted from there, and a free fit above its fixed fit restarts from it.
    """
    n = toys.shape[0]
    free_mask, free_values, lo, hi = fit_setup(model)
    fixed_mask, fixed_values, _, _ = fit_setup(model, poi_value)
    half = max(1, min(chunk // 2, n))
    mask = np.concatenate([np.tile(free_mask, (half, 1)), np.tile(fixed_mask, (half, 1))])
    values = np.concatenate([np.tile(free_values, (half, 1)), np.tile(fixed_values, (half, 1))])
    free_nll, fixed_nll = np.full(n, np.nan), np.full(n, np.nan)
    free_x, fixed_x = np.full((n, len(start)), np.nan), np.full((n, len(start)), np.nan)
    ok = np.zeros(n, dtype=bool)
    poi = model.poi_index
    valleys = several_valley_parameters(model)
    valleys = valleys[valleys != poi]
    start_fixed = np.array(start, dtype=float)
    start_fixed[poi] = poi_value
    x0 = np.concatenate([np.tile(start, (half, 1)), np.tile(start_fixed, (half, 1))])
    # every toy starts from the same two points: two scoring-matrix inverses serve the whole first round
    inverse = batchfit.start_inverse(model, np.stack([start, start_fixed]), np.stack([free_mask, fixed_mask]))
    inverse = np.repeat(inverse, half, axis=0)
    for begin in range(0, n, half):
        idx = np.arange(begin, min(begin + half, n))
        pad = np.resize(idx, half)  # a fixed batch shape: one compiled program for all chunks
        data = np.concatenate([toys[pad], toys[pad]])
        first = _rounds(model, x0, data, mask, values, lo, hi, inverse, _FIRST_ITERATIONS)
        swapped = np.concatenate([first.bestfit[half:], first.bestfit[:half]])
        swapped[:half, poi] = np.clip(first.bestfit[:half, poi], lo[poi], hi[poi])  # free fits: released POI
        swapped[half:, poi] = poi_value
        if valleys.size:  # the mirror probes below replace the second start (more lower valleys, less cost)
            second = first  # except for the fits the first start did not bring to convergence
            late = np.flatnonzero(~first.converged)
            if late.size:
                second = first.replace_items(late, _small_batches(model, swapped[late], data[late], mask[late],
                                                                  values[late], lo, hi, "quasi-newton",
                                                                  first.inverse[late]))
        else:
            second = _rounds(model, swapped, data, mask, values, lo, hi, first.inverse, _SECOND_ITERATIONS)
        best_nll, best_x, good, best_inverse = _lower(first, second)
        missing = np.flatnonzero(~good)
        if missing.size:  # exact Newton from the lowest point reached, in small padded batches
            retry = _small_batches(model, best_x[missing], data[missing], mask[missing], values[missing], lo, hi,
                                   "newton")
            best_nll[missing] = np.where(retry.converged, retry.twice_nll, best_nll[missing])
            best_x[missing] = np.where(retry.converged[:, None], retry.bestfit, best_x[missing])
            good[missing] = retry.converged
        if valleys.size:  # a likelihood with several valleys: probe the mirror images, refit the promising ones
            best_nll, best_x, good = _mirror_refits(model, valleys, best_nll, best_x, good, best_inverse, data, mask,
                                                    values, lo, hi)
            # without the second start, a free fit above its toy's fixed fit restarts from that minimum
            below = np.flatnonzero(good[:half] & good[half:] & (best_nll[half:] < best_nll[:half] - 1e-9))
            if below.size:
                again = _small_batches(model, best_x[half + below], data[below], mask[below], values[below], lo, hi,
                                       "quasi-newton", best_inverse[half + below])
                lower = again.converged & (again.twice_nll < best_nll[below])
                best_nll[below] = np.where(lower, again.twice_nll, best_nll[below])
                best_x[below] = np.where(lower[:, None], again.bestfit, best_x[below])
        k = len(idx)
        free_nll[idx], fixed_nll[idx], free_x[idx], fixed_x[idx] = (best_nll[:k], best_nll[half:half + k],
                                                                    best_x[:k], best_x[half:half + k])
        ok[idx] = good[:k] & good[half:half + k]
        if progress is not None:
            progress.update(k)
    return ToyMinima(free_nll, fixed_nll, free_x, fixed_x, ok)


@functools.lru_cache(maxsize=8)
def _probe_program(static, scales, devices: tuple):
    """:func:`_probe` compiled, its items split over ``devices`` when there are several (one per core)."""
    body = functools.partial(_probe, static, scales)
    if len(devices) <= 1:
        return jax.jit(body)
    from jax.sharding import Mesh, PartitionSpec

    items, whole = PartitionSpec("items"), PartitionSpec()
    specs = (whole, items, items, whole, items, items, items, whole, whole, items, whole, whole)
    return jax.jit(jax.shard_map(body, mesh=Mesh(np.array(devices), ("items",)), in_specs=specs,
                                 out_specs=(items, items), check_vma=False))


def _probe(static, scales, arrays, x, inverse, params, data, mask, values, lo, hi, nll, ratio, margin):
    """Per item, the most promising mirror point (the lowest rise passing the test) and whether one passed.

    The probed value of parameter p at alpha is scale * sign(alpha) * max(|alpha|, 0.5); the other
    parameters follow the quadratic profile at the minimum (the inverse's column: their conditional
    shift), so the point's twice_nll estimates the profile likelihood there.
    """
    nmain = data.shape[1] - arrays.auxdata.shape[0]

    def one(xi, inv, di, mi, vi, nll_i):
        a = xi[params]
        magnitude = jnp.maximum(jnp.abs(a), 0.5)
        sign = jnp.where(a >= 0, 1.0, -1.0)
        target = jnp.concatenate([scale * sign * magnitude for scale in scales])  # (s * k,)
        ps = jnp.tile(params, len(scales))
        column = inv[:, ps].T  # (s * k, npars)
        pivot = inv[ps, ps]
        ok = pivot > 0
        unit = jnp.eye(xi.shape[0], dtype=xi.dtype)[ps]
        direction = jnp.where(ok[:, None], column / jnp.where(ok, pivot, 1.0)[:, None], unit)
        shift = target - xi[ps]
        points = jnp.where(mi, vi, jnp.clip(xi + shift[:, None] * direction, lo, hi))
        f = jax.vmap(lambda y: -2.0 * _logpdf(arrays, static, y, di[:nmain], di[nmain:]))(points)
        rise = jnp.where(jnp.isfinite(f), f - nll_i, jnp.inf)
        predicted = jnp.where(ok, 0.5 * shift ** 2 / jnp.where(ok, pivot, 1.0), jnp.inf)
        passing = rise < jnp.minimum(margin, ratio * predicted)
        pick = jnp.argmin(jnp.where(passing, rise, jnp.inf))
        return points[pick], jnp.any(passing)

    return jax.vmap(one)(x, inverse, data, mask, values, nll)


def _mirror_refits(model: Any, params, best_nll, best_x, good, inverse, data, mask, values, lo, hi):
    """Refit from the most promising mirror point the items whose mirror images may hold a lower valley."""
    devices = jax.devices("cpu")
    devices = tuple(devices) if len(devices) > 1 and len(best_x) % len(devices) == 0 else ()
    probe = _probe_program(model._static, (MIRROR_SCALE,), devices)  # the fits' rule, one probed multiple
    point, promising = (np.asarray(v) for v in probe(
        model.arrays, best_x, inverse, jnp.asarray(params), data, mask, values, lo, hi,
        np.where(np.isfinite(best_nll), best_nll, np.inf), MIRROR_RATIO, MIRROR_MARGIN))
    chosen = np.flatnonzero(promising & good)
    if not chosen.size:
        return best_nll, best_x, good
    refit = _small_batches(model, point[chosen], data[chosen], mask[chosen], values[chosen], lo, hi,
                           "quasi-newton", inverse[chosen])
    lower = refit.converged & (refit.twice_nll < best_nll[chosen])
    best_nll, best_x = best_nll.copy(), best_x.copy()
    best_nll[chosen] = np.where(lower, refit.twice_nll, best_nll[chosen])
    best_x[chosen] = np.where(lower[:, None], refit.bestfit, best_x[chosen])
    return best_nll, best_x, good


def _lower(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per item, the lower converged minimum of two batched fits (twice_nll, point, converged, BFGS inverse)."""
    a_nll = np.where(a.converged, a.twice_nll, np.inf)
    b_nll = np.where(b.converged, b.twice_nll, np.inf)
    take_b = b_nll < a_nll
    good = a.converged | b.converged
    # neither converged: keep the lower point reached, for the exact-Newton retry
    take_b = np.where(good, take_b, np.nan_to_num(b.twice_nll, nan=np.inf) < np.nan_to_num(a.twice_nll, nan=np.inf))
    nll = np.where(take_b, b.twice_nll, a.twice_nll).astype(float)
    inverse = np.where(take_b[:, None, None], b.inverse, a.inverse)
    return nll, np.where(take_b[:, None], b.bestfit, a.bestfit).astype(float), good.copy(), inverse


#: iterations of the whole batch from the generating point and from the other fit's minimum (about the 90th
#: percentile of each on sbottom); the slower fits continue in small batches, under ``vmap`` all wait for the slowest
_FIRST_ITERATIONS, _SECOND_ITERATIONS = 16, 8
#: batch size of the continued and the exact-Newton fits (few toys need them; a small fixed shape compiles once)
_RETRY = 64


def _rounds(model: Any, x0, data, mask, values, lo, hi, inverse, iterations: int) -> BatchFitResult:
    """Quasi-Newton fits of a batch: ``iterations`` for all, then the unconverged continue in small batches."""
    out = batch_minimize(model, x0, data, mask, values, lo, hi, method="quasi-newton", maxiter=iterations,
                         inverse=inverse)
    late = np.flatnonzero(~out.converged)
    if late.size:  # from where they stopped, with the inverse they had learnt
        more = _small_batches(model, out.bestfit[late], data[late], mask[late], values[late], lo, hi,
                              "quasi-newton", out.inverse[late])
        out = out.replace_items(late, more)
    return out


def _small_batches(model: Any, x0, data, mask, values, lo, hi, method: str, inverse=None) -> BatchFitResult:
    parts = []
    for begin in range(0, len(x0), _RETRY):
        sl = np.resize(np.arange(begin, min(begin + _RETRY, len(x0))), _RETRY)
        out = batch_minimize(model, x0[sl], data[sl], mask[sl], values[sl], lo, hi, method=method,
                             inverse=None if inverse is None else inverse[sl])
        parts.append(out.take(slice(0, min(_RETRY, len(x0) - begin))))
    return BatchFitResult.concatenate(parts)


def _tail(samples: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Fraction of ``samples`` >= each of ``values`` (pyhf's EmpiricalDistribution.pvalue)."""
    ordered = np.sort(samples)
    return (ordered.size - np.searchsorted(ordered, values, side="left")) / ordered.size


def hypotest(model: Any, poi_value: float, *, test_stat: str = "qtilde", ntoys: int = 2000, seed: int = 0,
             data: Any = None, progress: bool = False, chunk: int = CHUNK) -> ToyHypoTestResult:
    """CLs of ``poi_value`` from ``ntoys`` toys under s+b and ``ntoys`` under b (pyhf's ToyCalculator).

    Deterministic for a given ``seed``. ``progress``: a tqdm bar over toys on stderr.
    """
    ntoys = _check(ntoys, test_stat)
    if getattr(model, "poi_index", None) is None:
        raise BayeshfError("the model has no parameter of interest; choose one with --poi NAME (poi_name=...).")
    poi_value = float(poi_value)
    observed = (np.concatenate([np.asarray(model.observed, float), np.asarray(model.auxdata, float)])
                if data is None else np.asarray(data, dtype=float))
    free, at_test, at_zero = _observed_fits(model, poi_value, observed, test_stat)
    q_obs = float(_statistic(free.twice_nll, at_test.twice_nll, free.bestfit[model.poi_index], poi_value))

    rng = np.random.default_rng(seed)
    toys_sb = sample_toys(model, at_test.bestfit, ntoys, rng)
    toys_b = sample_toys(model, at_zero.bestfit, ntoys, rng)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=2 * ntoys, unit="toy", desc="toys (s+b, b)", leave=False)
    try:
        q_sb, ok_sb = toy_statistics(model, poi_value, toys_sb, at_test.bestfit, progress=bar, chunk=chunk)
        q_b, ok_b = toy_statistics(model, poi_value, toys_b, at_zero.bestfit, progress=bar, chunk=chunk)
    finally:
        if bar is not None:
            bar.close()
    valid_sb, valid_b = q_sb[ok_sb], q_b[ok_b]
    if valid_sb.size == 0 or valid_b.size == 0:
        raise BayeshfError(f"no toy fit converged under {'s+b' if valid_sb.size == 0 else 'b'}; CLs is undefined.")
    clsb = float(_tail(valid_sb, np.array([q_obs]))[0])
    clb = float(_tail(valid_b, np.array([q_obs]))[0])
    # p-values of every b-only toy, then their percentiles (pyhf's expected_pvalues)
    sb_each, b_each = _tail(valid_sb, valid_b), _tail(valid_b, valid_b)
    table = np.stack([sb_each, b_each, sb_each / b_each], axis=1)
    band = np.percentile(table, BAND_PERCENTILES, axis=0)  # (5, 3)
    return ToyHypoTestResult(
        poi_value=poi_value, test_stat=test_stat,
        CLs_obs=clsb / clb if clb > 0 else float("nan"), CLsb_obs=clsb, CLb_obs=clb,
        CLs_exp=tuple(float(v) for v in band[:, 2]), CLsb_exp=tuple(float(v) for v in band[:, 0]),
        CLb_exp=tuple(float(v) for v in band[:, 1]), q_obs=q_obs, ntoys=ntoys, seed=int(seed),
        n_failed=int(np.sum(~ok_sb) + np.sum(~ok_b)), q_sb=q_sb, q_b=q_b,
    )


@display()
@dataclasses.dataclass(frozen=True)
class ToyUpperLimitResult:
    """Toy-based upper limits: CLs at each scanned POI value, interpolated to the level (as pyhf's scan)."""

    obs: float
    exp: tuple[float, ...]
    level: float
    poi_values: np.ndarray
    CLs_obs: np.ndarray
    CLs_exp: np.ndarray
    ntoys: int
    seed: int
    n_failed: int
    calctype: str = "toybased"

    def to_dict(self) -> dict[str, Any]:
        return {"obs": self.obs, "exp": list(self.exp), "level": self.level, "calctype": self.calctype,
                "ntoys": self.ntoys, "seed": self.seed, "failed_toys": self.n_failed,
                "scan": {"poi_values": self.poi_values.tolist(), "CLs_obs": self.CLs_obs.tolist(),
                         "CLs_exp": self.CLs_exp.tolist()}}


def upper_limit(model: Any, *, level: float = 0.05, ntoys: int = 2000, seed: int = 0, scan: Any = None,
                test_stat: str = "qtilde", progress: bool = False) -> ToyUpperLimitResult:
    """Upper limits from toy CLs on a scan of POI values (pyhf's ``upper_limit`` with a scan and toys).

    Each scanned value gets its own toys (the same ``seed`` at every value, so
    the CLs curve is smooth in mu); the limit is the linear interpolation of
    CLs at ``level``, observed and for each expected quantile. ``scan``
    defaults to 12 values up to 1.5 times the asymptotic +2 sigma expected limit.
    """
    _check(ntoys, test_stat)
    if not 0.0 < level < 1.0:
        raise BayeshfError(f"the CLs level must lie in (0, 1), got {level}.")
    if scan is None:
        from bayeshf.limits import upper_limit as asymptotic_limit

        top = 1.5 * max(asymptotic_limit(model, level=level, test_stat=test_stat).exp[4], 1e-3)
        scan = np.linspace(top / 12, top, 12)
    values = np.asarray(scan, dtype=float)
    if values.ndim != 1 or values.size < 2 or np.any(np.diff(values) <= 0):
        raise BayeshfError("the toy limit scan needs at least two increasing POI values.")
    results = [hypotest(model, v, test_stat=test_stat, ntoys=ntoys, seed=seed, progress=progress) for v in values]
    cls_obs = np.array([r.CLs_obs for r in results])
    cls_exp = np.array([r.CLs_exp for r in results])  # (n, 5)

    def crossing(cls):
        # as pyhf: interpolate the POI value at which CLs (falling with mu) reaches the level
        return float(np.interp(level, cls[::-1], values[::-1]))

    return ToyUpperLimitResult(
        obs=crossing(cls_obs), exp=tuple(crossing(cls_exp[:, k]) for k in range(5)), level=level,
        poi_values=values, CLs_obs=cls_obs, CLs_exp=cls_exp, ntoys=int(ntoys), seed=int(seed),
        n_failed=int(sum(r.n_failed for r in results)),
    )
