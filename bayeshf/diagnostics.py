"""Posterior summaries and convergence warnings (R-hat, ESS, divergences).

Thresholds follow Vehtari et al. (2021), "Rank-normalization, folding, and
localization: an improved R-hat": R-hat below 1.01 and bulk/tail ESS of at
least 100 per chain.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

RHAT_MAX = 1.01
ESS_PER_CHAIN_MIN = 100


#: quantiles every parameter's row carries (field names q<percent>)
QUANTILES = (0.025, 0.05, 0.16, 0.5, 0.84, 0.95, 0.975)


class SummaryRow(NamedTuple):
    """One scalar parameter: mean, sd, quantiles (central 68% / 95% intervals, median, 5% / 95%),
    68% / 95% highest-density intervals (arviz.hdi), bulk / tail ESS, rank-normalised split R-hat."""

    name: str
    mean: float
    sd: float
    q16: float
    q84: float
    q2_5: float
    q97_5: float
    ess_bulk: float
    ess_tail: float
    r_hat: float
    q5: float = float("nan")
    q50: float = float("nan")
    q95: float = float("nan")
    hdi_68_lower: float = float("nan")
    hdi_68_upper: float = float("nan")
    hdi_95_lower: float = float("nan")
    hdi_95_upper: float = float("nan")


class PoiSummary(NamedTuple):
    """The numbers quoted for the parameter of interest."""

    name: str
    upper_limit_95: float  # one-sided 95% credible upper limit: the 95% quantile of the marginal posterior
    upper_limit_95_mcse: float  # its Monte Carlo standard error (arviz.mcse of the quantile)
    hdi_68: tuple[float, float]
    hdi_95: tuple[float, float]
    mode: float  # of the marginal posterior: the maximum of its boundary-corrected KDE (arviz.kde)
    median: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "upper_limit_95": _finite(self.upper_limit_95),
                "upper_limit_95_mcse": _finite(self.upper_limit_95_mcse),
                "hdi_68": [_finite(v) for v in self.hdi_68], "hdi_95": [_finite(v) for v in self.hdi_95],
                "mode": _finite(self.mode), "mode_method": MODE_METHOD, "median": _finite(self.median)}


MODE_METHOD = "maximum of the marginal posterior's kernel density estimate (arviz.kde, boundary-corrected)"


class Convergence(NamedTuple):
    """Whether every parameter reached the target ESS (bulk and tail) and R-hat, and which did not."""

    target_ess: float
    rhat_max: float
    reached: bool
    short: list[SummaryRow]  # the rows short of the targets, worst first
    stop: str  # why the draws ended ("converged", "max_time", "draws", "interrupted")
    max_time: float

    def to_dict(self) -> dict[str, Any]:
        return {"target_ess": self.target_ess, "rhat_max": self.rhat_max, "reached": self.reached,
                "stop": self.stop, "max_time": self.max_time or None,
                "short": {r.name: {"ess_bulk": _finite(r.ess_bulk), "ess_tail": _finite(r.ess_tail),
                                   "r_hat": _finite(r.r_hat)} for r in self.short}}

    def message(self, draws: int) -> str:
        """One line: what fell short, after how many draws, and what to try; "" when reached."""
        if self.reached:
            return ""
        worst = ", ".join(f"{r.name} (bulk {r.ess_bulk:.0f}, tail {r.ess_tail:.0f}, R-hat {r.r_hat:.3f})"
                          for r in self.short[:3])
        more = f" and {len(self.short) - 3} more" if len(self.short) > 3 else ""
        why = {"max_time": f"--max-time {self.max_time:g} s ran out",
               "interrupted": "sampling was interrupted"}.get(self.stop, "the draws ran out")
        return (f"NOT CONVERGED: {len(self.short)} parameter(s) short of bulk and tail ESS {self.target_ess:g} "
                f"and R-hat < {self.rhat_max} after {draws} draws per chain ({why}): {worst}{more}; "
                "try a longer --max-time, more --warmup or a higher --target-acceptance, and do not quote "
                "these numbers as they are.")


class Summary(NamedTuple):
    """Summary table plus the warnings that go with it."""

    rows: list[SummaryRow]
    warnings: list[str]
    divergences: int
    chains: int
    draws: int
    poi: PoiSummary | None = None
    convergence: Convergence | None = None

    def to_dict(self) -> dict[str, Any]:
        document = {
            "chains": self.chains, "draws": self.draws, "divergences": self.divergences,
            "warnings": list(self.warnings),
        }
        if self.convergence is not None:
            document["converged"] = self.convergence.reached
            document["convergence"] = self.convergence.to_dict()
        if self.poi is not None:
            document["poi"] = self.poi.to_dict()
        document["parameters"] = {r.name: {k: _finite(v) for k, v in r._asdict().items() if k != "name"}
                                  for r in self.rows}
        return document


def convergence_table(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bulk ESS, tail ESS and rank-normalised split R-hat (ArviZ) of every column of ``theta``
    (chains, draws, ndim); NaN where there are fewer than 4 draws, R-hat NaN with one chain."""
    import arviz as az

    theta = np.asarray(theta, dtype=float)
    if theta.shape[1] < 4:
        nan = np.full(theta.shape[2], np.nan)
        return nan, nan.copy(), nan.copy()
    dataset = az.convert_to_dataset({"x": theta})
    bulk = np.asarray(az.ess(dataset, method="bulk")["x"].values, dtype=float)
    tail = np.asarray(az.ess(dataset, method="tail")["x"].values, dtype=float)
    rhat = np.asarray(az.rhat(dataset)["x"].values, dtype=float)
    if theta.shape[0] < 2:
        rhat = np.full_like(rhat, np.nan)
    return bulk, tail, rhat


def poi_summary(name: str, draws: np.ndarray) -> PoiSummary:
    """The credible upper limit, HDIs, marginal mode and median of one parameter's draws (chains, draws)."""
    flat = np.asarray(draws, dtype=float).ravel()
    limit, mcse = credible_upper_limit(draws, 0.95)
    return PoiSummary(name, limit, mcse, _hdi(flat, 0.68), _hdi(flat, 0.95), kde_mode(flat), float(np.median(flat)))


def credible_upper_limit(draws: np.ndarray, credibility: float = 0.95) -> tuple[float, float]:
    """One-sided credible upper limit (the ``credibility`` quantile of draws (chains, draws)) and its MC error."""
    import arviz as az

    draws = np.asarray(draws, dtype=float)
    limit = float(np.quantile(draws, credibility))
    mcse = float(az.mcse(draws, method="quantile", prob=credibility)) if draws.shape[-1] >= 4 else float("nan")
    return limit, mcse


def _hdi(flat: np.ndarray, probability: float) -> tuple[float, float]:
    import arviz as az

    if np.ptp(flat) == 0:
        return float(flat[0]), float(flat[0])
    lower, upper = az.hdi(flat, hdi_prob=probability)
    return float(lower), float(upper)


def kde_mode(flat: np.ndarray) -> float:
    """The maximum of the boundary-corrected kernel density estimate of ``flat`` (arviz.kde)."""
    import arviz as az

    if np.ptp(flat) == 0:
        return float(flat[0])
    grid, density = az.kde(np.asarray(flat, dtype=float))
    return float(grid[int(np.argmax(density))])


def _finite(value: float):
    value = float(value)
    return value if np.isfinite(value) else None


def scalar_draws(idata, *, include_fixed: bool = False) -> dict[str, np.ndarray]:
    """Per scalar parameter (pyhf names, e.g. ``staterror_SR[0]``) its draws (chains, draws)."""
    out = {}
    posterior = idata.posterior
    for name, var in posterior.data_vars.items():
        values = np.asarray(var.values, dtype=float)
        if values.ndim == 2:
            items = [(str(name), values)]
        else:
            items = [(f"{name}[{i}]", values[..., i]) for i in range(values.shape[-1])]
        for scalar, draws in items:
            if include_fixed or np.ptp(draws) > 0:
                out[scalar] = draws
    return out


def summarize(idata, *, var_names: list[str] | None = None) -> Summary:
    """Mean, sd, 68%/95% central intervals, bulk/tail ESS and R-hat of every free scalar parameter."""
    import arviz as az

    draws_by_name = scalar_draws(idata)
    poi = str(idata.posterior.attrs.get("poi", "") or "")
    if poi in draws_by_name:  # the POI first
        draws_by_name = {poi: draws_by_name[poi], **{k: v for k, v in draws_by_name.items() if k != poi}}
    if var_names:
        draws_by_name = {k: v for k, v in draws_by_name.items() if k in var_names or k.split("[")[0] in var_names}
    rows = []
    chains, ndraws = next(iter(draws_by_name.values())).shape if draws_by_name else (0, 0)
    if draws_by_name:
        bulks, tails, rhats = convergence_table(np.stack(list(draws_by_name.values()), axis=-1))
    for i, (name, draws) in enumerate(draws_by_name.items()):
        q = dict(zip(QUANTILES, map(float, np.quantile(draws, QUANTILES))))
        flat = draws.ravel()
        (l68, u68), (l95, u95) = _hdi(flat, 0.68), _hdi(flat, 0.95)
        rows.append(SummaryRow(name, float(draws.mean()), float(draws.std(ddof=1)) if draws.size > 1 else 0.0,
                               q[0.16], q[0.84], q[0.025], q[0.975], float(bulks[i]), float(tails[i]), float(rhats[i]),
                               q[0.05], q[0.5], q[0.95], l68, u68, l95, u95))
    poi_row = poi_summary(poi, draws_by_name[poi]) if poi in draws_by_name else None
    attrs = idata.posterior.attrs
    target_ess = float(attrs.get("target_ess", 0) or 0)
    divergences = 0
    warnings = []
    stats = getattr(idata, "sample_stats", None)
    if stats is not None and "diverging" in stats:
        divergences = int(np.asarray(stats["diverging"]).sum())
        if divergences:
            warnings.append(f"{divergences} of {chains * ndraws} transitions diverged; "
                            "try --metric dense or a higher target acceptance.")
    if stats is not None and "tree_depth" in stats and "max_tree_depth" in idata.posterior.attrs:
        saturated = int((np.asarray(stats["tree_depth"]) >= idata.posterior.attrs["max_tree_depth"]).sum())
        if saturated:
            warnings.append(f"{saturated} transitions hit the maximum tree depth.")
    ess_min = target_ess if target_ess > 0 else ESS_PER_CHAIN_MIN * chains
    convergence = None
    if target_ess > 0:  # a run that tried to reach target_ess says in one line whether it did
        convergence = _convergence(rows, chains, ess_min, str(attrs.get("stop", "draws")),
                                   float(attrs.get("max_time", 0) or 0))
        if not convergence.reached:
            warnings.append(convergence.message(ndraws))
    else:
        bad_rhat = [r for r in rows if np.isfinite(r.r_hat) and r.r_hat > RHAT_MAX]
        if bad_rhat or (chains > 1 and any(not np.isfinite(r.r_hat) for r in rows)):
            worst = max(bad_rhat, key=lambda r: r.r_hat) if bad_rhat else None
            detail = f" (worst {worst.name}: {worst.r_hat:.3f})" if worst else ""
            warnings.append(f"{len(bad_rhat)} parameter(s) have R-hat > {RHAT_MAX}{detail}; the chains have not mixed.")
        low = [r for r in rows if min(r.ess_bulk, r.ess_tail) < ess_min]
        if low:
            worst = min(low, key=lambda r: min(r.ess_bulk, r.ess_tail))
            warnings.append(f"{len(low)} parameter(s) have bulk or tail ESS below {ess_min:g} "
                            f"(worst {worst.name}: {min(worst.ess_bulk, worst.ess_tail):.0f}); draw more.")
    if attrs.get("interrupted"):
        warnings.append("sampling was interrupted; the summary covers the draws made so far.")
    return Summary(rows, warnings, divergences, chains, ndraws, poi_row, convergence)


def _convergence(rows: list[SummaryRow], chains: int, target_ess: float, stop: str, max_time: float) -> Convergence:
    """Rows short of ``target_ess`` (bulk or tail, NaN counts as short) or of R-hat < RHAT_MAX, worst first."""
    def short(r: SummaryRow) -> bool:
        ess_ok = np.isfinite(r.ess_bulk) and np.isfinite(r.ess_tail) and min(r.ess_bulk, r.ess_tail) >= target_ess
        rhat_ok = chains < 2 or (np.isfinite(r.r_hat) and r.r_hat < RHAT_MAX)
        return not (ess_ok and rhat_ok)

    def badness(r: SummaryRow) -> float:
        ess = min(r.ess_bulk, r.ess_tail)
        ess = ess if np.isfinite(ess) else 0.0
        rhat = r.r_hat if np.isfinite(r.r_hat) else 2.0
        return max(target_ess / max(ess, 1.0), 1.0 + 100.0 * (rhat - 1.0))

    bad = sorted((r for r in rows if short(r)), key=badness, reverse=True)
    return Convergence(float(target_ess), RHAT_MAX, not bad, bad, stop, max_time)


def format_table(summary: Summary, *, max_rows: int | None = None) -> str:
    """The summary as a fixed-width text table: quantiles 2.5/16/50/84/97.5%, the 95% HDI, ESS and R-hat per
    parameter, then the POI's credible upper limit, HDIs and mode."""
    width = max([len("parameter")] + [len(r.name) for r in summary.rows])
    header = (f"{'parameter':<{width}}  {'mean':>10} {'sd':>9}  {'2.5%':>9} {'16%':>9} {'50%':>9} {'84%':>9}"
              f" {'97.5%':>9}  {'95% HDI':>21}  {'ess_bulk':>8} {'ess_tail':>8} {'r_hat':>6}")
    lines = [header, "-" * len(header)]
    rows = summary.rows if max_rows is None else summary.rows[:max_rows]
    for r in rows:
        lines.append(f"{r.name:<{width}}  {r.mean:>10.4g} {r.sd:>9.3g}  {r.q2_5:>9.4g} {r.q16:>9.4g} {r.q50:>9.4g}"
                     f" {r.q84:>9.4g} {r.q97_5:>9.4g}  [{r.hdi_95_lower:>9.4g}, {r.hdi_95_upper:>9.4g}]"
                     f"  {r.ess_bulk:>8.0f} {r.ess_tail:>8.0f} {r.r_hat:>6.3f}")
    if max_rows is not None and len(summary.rows) > max_rows:
        lines.append(f"... {len(summary.rows) - max_rows} more parameters in summary.json")
    if summary.poi is not None:
        lines.append(format_poi(summary.poi))
    return "\n".join(lines)


def format_poi(poi: PoiSummary) -> str:
    """One line: the POI's 95% credible upper limit (with its MC error), HDIs and marginal mode."""
    return (f"{poi.name}: 95% credible upper limit {poi.upper_limit_95:.4g} (MC error {poi.upper_limit_95_mcse:.2g}); "
            f"68% HDI [{poi.hdi_68[0]:.4g}, {poi.hdi_68[1]:.4g}], 95% HDI [{poi.hdi_95[0]:.4g}, {poi.hdi_95[1]:.4g}]; "
            f"mode {poi.mode:.4g} (marginal KDE), median {poi.median:.4g}")
