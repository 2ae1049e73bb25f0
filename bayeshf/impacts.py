"""Pulls and impacts of the nuisance parameters on the POI, ranking, grouped impacts.

Two estimates of the impact of a parameter theta_i on the POI mu:

- ``hessian`` (fast, linear): shifting theta_i by d with the other parameters
  profiled moves mu by C_{mu i} / C_{ii} * d, with C the covariance at the
  minimum; post-fit d = sigma_i (the Hessian uncertainty), pre-fit d = the
  constraint width.
- ``refit`` (as cabinetry / ATLAS rankings): fix theta_i at theta_hat_i +- d
  and refit; the impact is the change of mu_hat.

Grouped impacts use the covariance: fixing a group G of parameters reduces
the POI variance by C_{mu G} C_{GG}^-1 C_{G mu}; its square root is the
group's impact (the quadrature difference of the POI uncertainty with and
without the group floating).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from bayeshf.errors import BayeshfError
from bayeshf.fit import FitFailedError, FitResult, _tolerance, global_fit, may_have_several_valleys
from bayeshf.problem import FitProblem
from bayeshf._display import display

if TYPE_CHECKING:  # annotations only: no import cycle at run time
    from bayeshf.model import HistFactoryModel

__all__ = ["ImpactsResult", "GroupedImpactsResult", "prefit_constraints", "impacts", "ranking", "grouped_impacts"]


@display()
@dataclasses.dataclass(frozen=True)
class ImpactsResult:
    """Per-parameter impacts on the POI, in the order of ``par_names``.

    ``postfit_up``/``postfit_down`` (and ``prefit_*``) are the changes of the
    POI best fit when the parameter moves up/down by its post-fit (pre-fit)
    uncertainty; NaN where a parameter has no constraint (no pre-fit width).
    ``bestfit``, ``postfit_uncertainty``, ``prefit_centre`` and
    ``prefit_uncertainty`` give the pulls.
    """

    poi_name: str
    poi_bestfit: float
    poi_uncertainty: float
    par_names: tuple[str, ...]
    bestfit: np.ndarray
    postfit_uncertainty: np.ndarray
    prefit_centre: np.ndarray
    prefit_uncertainty: np.ndarray
    postfit_up: np.ndarray
    postfit_down: np.ndarray
    prefit_up: np.ndarray
    prefit_down: np.ndarray
    method: str

    def ranked(self) -> "ImpactsResult":
        """The same impacts sorted by the larger absolute post-fit impact, largest first."""
        score = np.maximum(np.abs(self.postfit_up), np.abs(self.postfit_down))
        order = np.argsort(-np.nan_to_num(score, nan=-1.0), kind="stable")
        arrays = {f.name: getattr(self, f.name)[order] for f in dataclasses.fields(self)
                  if isinstance(getattr(self, f.name), np.ndarray)}
        return dataclasses.replace(self, par_names=tuple(self.par_names[i] for i in order), **arrays)

    def to_dict(self) -> dict[str, Any]:
        def clean(a: np.ndarray) -> list[float | None]:
            return [None if not np.isfinite(v) else float(v) for v in a]

        return {
            "poi_name": self.poi_name, "poi_bestfit": self.poi_bestfit,
            "poi_uncertainty": clean(np.array([self.poi_uncertainty]))[0],
            "method": self.method, "par_names": list(self.par_names), "bestfit": clean(self.bestfit),
            "postfit_uncertainty": clean(self.postfit_uncertainty), "prefit_centre": clean(self.prefit_centre),
            "prefit_uncertainty": clean(self.prefit_uncertainty), "postfit_up": clean(self.postfit_up),
            "postfit_down": clean(self.postfit_down), "prefit_up": clean(self.prefit_up),
            "prefit_down": clean(self.prefit_down),
        }


@display()
@dataclasses.dataclass(frozen=True)
class GroupedImpactsResult:
    """Impact of each group of parameters on the POI uncertainty (Hessian approximation)."""

    poi_name: str
    poi_uncertainty: float
    groups: dict[str, float]
    members: dict[str, tuple[str, ...]]

    def to_dict(self) -> dict[str, Any]:
        def clean(v: float) -> float | None:
            return float(v) if np.isfinite(v) else None

        return {"poi_name": self.poi_name, "poi_uncertainty": clean(self.poi_uncertainty),
                "groups": {k: clean(v) for k, v in self.groups.items()},
                "members": {k: list(v) for k, v in self.members.items()}}


def prefit_constraints(model: HistFactoryModel) -> tuple[np.ndarray, np.ndarray]:
    """(centre, width) of each parameter's constraint; width NaN for unconstrained parameters.

    Normal constraints: centre = auxdata, width = sigma. Poisson (shapesys):
    centre 1, width 1/sqrt(tau) (the relative uncertainty of the background).
    """
    centre = np.asarray(model.init, dtype=float).copy()
    width = np.full(model.npars, np.nan)
    for ps in model.parameters:
        sl = ps.slice
        if ps.constraint == "normal":
            centre[sl] = ps.auxdata
            width[sl] = ps.sigmas
        elif ps.constraint == "poisson":
            centre[sl] = 1.0
            width[sl] = 1.0 / np.sqrt(np.asarray(ps.factors, dtype=float))
    return centre, width


def _global(model: Any, data: Any, init: Any, bounds: Any, fixed: Any, method: str,
            fit_result: FitResult | None) -> tuple[FitResult, FitProblem]:
    if getattr(model, "poi_index", None) is None:
        raise BayeshfError(f"{getattr(model, 'label', 'the model')}: the model has no parameter of interest; "
                           "choose one with --poi NAME (poi_name=...).")
    problem = FitProblem.resolve(model, init=init, fixed=fixed, bounds=bounds, data=data)
    result = fit_result or global_fit(problem, method=method, what="the free fit",
                                      explore=may_have_several_valleys(model))
    if not result.success:
        raise FitFailedError("the free fit", result, f"{result.message}, edm {result.edm:.2g}")
    return result, problem


def impacts(
    model: HistFactoryModel,
    *,
    method: str = "refit",
    fit_result: FitResult | None = None,
    data: Sequence[float] | None = None,
    init: Any = None,
    bounds: Any = None,
    fixed: Mapping[str, float | None] | Sequence[str] | None = None,
    fit_method: str = "trust-krylov",
    progress: bool = False,
) -> ImpactsResult:
    """Impacts of every free, non-POI parameter on the POI (``method``: ``refit`` or ``hessian``)."""
    if method not in ("refit", "hessian"):
        raise BayeshfError(f"unknown impact method {method!r}; choose refit or hessian.")
    result, problem = _global(model, data, init, bounds, fixed, fit_method, fit_result)
    box = problem.bounds
    poi = int(model.poi_index)
    centre, prefit = prefit_constraints(model)
    nps = [i for i in range(model.npars) if i != poi and not result.fixed[i]]
    cov = result.covariance
    post = result.uncertainties
    out = {key: np.full(len(nps), np.nan) for key in ("postfit_up", "postfit_down", "prefit_up", "prefit_down")}
    iterator: Any = list(enumerate(nps))
    if progress and method == "refit":
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="impacts", unit="parameter", file=__import__("sys").stderr)
    mu_hat = result.bestfit[poi]
    if method == "refit" and result.at_bound[poi]:
        # refits cannot move a POI pinned on its bound: every refit impact reads 0 there
        warnings.warn(f"the best fit of {model.par_names[poi]} sits on its bound ({mu_hat:g}), where refit impacts "
                      "all read 0; use method='hessian' for the Hessian impacts.", stacklevel=2)
    several_valleys = may_have_several_valleys(model)  # then every start of each refit is fitted, the lowest kept
    for k, i in iterator:
        widths = {"postfit": post[i], "prefit": prefit[i]}
        for kind, width in widths.items():
            if not np.isfinite(width) or width <= 0:
                continue
            if method == "hessian":
                slope = cov[poi, i] / cov[i, i] if cov[i, i] > 0 else np.nan
                out[f"{kind}_up"][k], out[f"{kind}_down"][k] = slope * width, -slope * width
                continue
            for sign, key in ((1.0, f"{kind}_up"), (-1.0, f"{kind}_down")):
                target = float(np.clip(result.bestfit[i] + sign * width, box[i, 0], box[i, 1]))
                refit = global_fit(problem.fixing(i, target), (result.bestfit,), method=fit_method,
                                   final_hessian=False, reference=result, explore=several_valleys,
                                   what=f"the impact fit with {model.par_names[i]} fixed at {target:g}")
                if refit.twice_nll < result.twice_nll - _tolerance(result.twice_nll):
                    raise FitFailedError("the free fit", result, "a fit with "
                                         f"{model.par_names[i]} fixed at {target:g} reaches a lower minimum "
                                         f"({refit.twice_nll:.8g} < {result.twice_nll:.8g}), so the free fit "
                                         "is not the global minimum")
                out[key][k] = refit.bestfit[poi] - mu_hat
    return ImpactsResult(
        poi_name=model.par_names[poi],
        poi_bestfit=float(mu_hat),
        poi_uncertainty=float(post[poi]),
        par_names=tuple(model.par_names[i] for i in nps),
        bestfit=result.bestfit[nps],
        postfit_uncertainty=post[nps],
        prefit_centre=centre[nps],
        prefit_uncertainty=prefit[nps],
        method=method,
        **out,
    )


def ranking(model: HistFactoryModel, **kwargs: Any) -> ImpactsResult:
    """:func:`impacts` sorted by the larger absolute post-fit impact (largest first)."""
    return impacts(model, **kwargs).ranked()


def grouped_impacts(
    model: HistFactoryModel,
    groups: Mapping[str, Sequence[str]] | None = None,
    *,
    fit_result: FitResult | None = None,
    data: Sequence[float] | None = None,
    init: Any = None,
    bounds: Any = None,
    fixed: Mapping[str, float | None] | Sequence[str] | None = None,
    fit_method: str = "trust-krylov",
) -> GroupedImpactsResult:
    """Impact of groups of parameters on the POI uncertainty.

    ``groups``: name -> parameter or parameter-set names; default: one group
    per modifier type (normsys, histosys, staterror, shapesys, lumi,
    normfactor, shapefactor). Each impact is sqrt(C_mu,G C_G,G^-1 C_G,mu).
    """
    result, *_ = _global(model, data, init, bounds, fixed, fit_method, fit_result)
    poi = int(model.poi_index)
    names = list(model.par_names)
    if groups is None:
        groups = {}
        for ps in model.parameters:
            if ps.is_poi:
                continue
            groups.setdefault(ps.modifier_type, []).append(ps.name)  # type: ignore[union-attr]
    set_slices = {ps.name: ps.slice for ps in model.parameters}
    cov = result.covariance
    impact: dict[str, float] = {}
    members: dict[str, tuple[str, ...]] = {}
    for group, entries in groups.items():
        idx: list[int] = []
        for entry in entries:
            if entry in set_slices:
                idx.extend(range(set_slices[entry].start, set_slices[entry].stop))
            elif entry in names:
                idx.append(names.index(entry))
            else:
                raise BayeshfError(f"group {group!r} names {entry!r}, which is not a parameter of the model.")
        idx = [i for i in dict.fromkeys(idx) if i != poi and not result.fixed[i]]
        members[group] = tuple(names[i] for i in idx)
        if not idx:
            impact[group] = 0.0
            continue
        c_mg = cov[poi, idx]
        c_gg = cov[np.ix_(idx, idx)]
        if not (np.all(np.isfinite(c_mg)) and np.all(np.isfinite(c_gg))):
            impact[group] = float("nan")  # the Hessian leaves the POI or the group undetermined
            continue
        reduction = float(c_mg @ np.linalg.lstsq(c_gg, c_mg, rcond=None)[0])
        impact[group] = float(np.sqrt(max(reduction, 0.0)))
    return GroupedImpactsResult(poi_name=names[poi], poi_uncertainty=float(result.uncertainties[poi]),
                                groups=impact, members=members)
