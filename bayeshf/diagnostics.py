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


class SummaryRow(NamedTuple):
    """One scalar parameter: mean, sd, central 68% / 95% credible intervals, ESS, R-hat."""

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


class Summary(NamedTuple):
    """Summary table plus the warnings that go with it."""

    rows: list[SummaryRow]
    warnings: list[str]
    divergences: int
    chains: int
    draws: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "chains": self.chains, "draws": self.draws, "divergences": self.divergences,
            "warnings": list(self.warnings),
            "parameters": {r.name: {k: _finite(v) for k, v in r._asdict().items() if k != "name"} for r in self.rows},
        }


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
    for name, draws in draws_by_name.items():
        q = np.quantile(draws, [0.16, 0.84, 0.025, 0.975])
        ess_bulk = float(az.ess(draws, method="bulk")) if ndraws >= 4 else float("nan")
        ess_tail = float(az.ess(draws, method="tail")) if ndraws >= 4 else float("nan")
        r_hat = float(az.rhat(draws)) if ndraws >= 4 else float("nan")
        rows.append(SummaryRow(name, float(draws.mean()), float(draws.std(ddof=1)) if draws.size > 1 else 0.0,
                               *map(float, q), ess_bulk, ess_tail, r_hat))
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
    bad_rhat = [r for r in rows if np.isfinite(r.r_hat) and r.r_hat > RHAT_MAX]
    if bad_rhat or (chains > 1 and any(not np.isfinite(r.r_hat) for r in rows)):
        worst = max(bad_rhat, key=lambda r: r.r_hat) if bad_rhat else None
        detail = f" (worst {worst.name}: {worst.r_hat:.3f})" if worst else ""
        warnings.append(f"{len(bad_rhat)} parameter(s) have R-hat > {RHAT_MAX}{detail}; the chains have not mixed.")
    ess_min = ESS_PER_CHAIN_MIN * chains
    low = [r for r in rows if min(r.ess_bulk, r.ess_tail) < ess_min]
    if low:
        worst = min(low, key=lambda r: min(r.ess_bulk, r.ess_tail))
        warnings.append(f"{len(low)} parameter(s) have bulk or tail ESS below {ess_min} "
                        f"(worst {worst.name}: {min(worst.ess_bulk, worst.ess_tail):.0f}); draw more.")
    if idata.posterior.attrs.get("interrupted"):
        warnings.append("sampling was interrupted; the summary covers the draws made so far.")
    return Summary(rows, warnings, divergences, chains, ndraws)


def format_table(summary: Summary, *, max_rows: int | None = None) -> str:
    """The summary as a fixed-width text table."""
    width = max([len("parameter")] + [len(r.name) for r in summary.rows])
    header = (f"{'parameter':<{width}}  {'mean':>10} {'sd':>9}  {'68% interval':>21}  {'95% interval':>21}"
              f"  {'ess_bulk':>8} {'ess_tail':>8} {'r_hat':>6}")
    lines = [header, "-" * len(header)]
    rows = summary.rows if max_rows is None else summary.rows[:max_rows]
    for r in rows:
        lines.append(f"{r.name:<{width}}  {r.mean:>10.4g} {r.sd:>9.3g}  [{r.q16:>9.4g}, {r.q84:>9.4g}]"
                     f"  [{r.q2_5:>9.4g}, {r.q97_5:>9.4g}]  {r.ess_bulk:>8.0f} {r.ess_tail:>8.0f} {r.r_hat:>6.3f}")
    if max_rows is not None and len(summary.rows) > max_rows:
        lines.append(f"... {len(summary.rows) - max_rows} more parameters in summary.json")
    return "\n".join(lines)
