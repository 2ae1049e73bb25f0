"""Bounded Newton minimisation on the host: the one damped, active-set Newton solver.

The fit polishes its minima with it (twice_nll and its exact Hessian,
:mod:`bayeshf.fit`); the Laplace approximation finds the posterior's mode and
MAP with it (minus the log-density and a finite-difference Hessian,
:mod:`bayeshf.laplace`).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np


class NewtonResult(NamedTuple):
    x: np.ndarray
    value: float
    grad: np.ndarray
    hessian: np.ndarray    # at x (unless final_hessian is False: then perhaps at an earlier point)
    at_bound: np.ndarray   # free parameters pinned on a bound
    accepted: int          # steps taken


def bounded_newton(value_and_grad: Callable, hessian: Callable, x: np.ndarray, mask: np.ndarray, lo: np.ndarray,
                   hi: np.ndarray, steps: int = 8, final_hessian: bool = True, budget: int = 200,
                   rtol: float = 1e-13, gtol: float | None = None) -> NewtonResult:
    """Minimise ``value_and_grad(x) -> (value, gradient)`` over the box [lo, hi] by projected Newton steps with
    an active set of parameters pinned on their bounds; ``mask`` holds parameters where they are.

    Parameters close to a bound whose gradient points outward are pinned on it;
    a pinned parameter whose gradient points inward is released. The free ones
    take Newton steps with ``hessian(x)`` (Levenberg-Marquardt damped where it is
    not positive definite or a step does not descend), shortened to stay in the
    box (a parameter the shortened step reaches is pinned), accepted only if the
    value does not rise by more than ``rtol`` of its size (its round-off: sums of
    large cancelling terms carry more). At most ``steps`` undamped steps between
    releases and ``budget`` in all. Converged: the Newton decrement is below round-off
    of the value, or, with ``gtol``, every free gradient component is below it.
    """
    import scipy.linalg

    width = np.where(np.isfinite(hi - lo), hi - lo, 1.0)
    value, grad = value_and_grad(x)
    value, grad = float(value), np.asarray(grad)
    near_lo = ~mask & np.isfinite(lo) & (x - lo <= 1e-4 * width) & (grad > 0)
    near_hi = ~mask & np.isfinite(hi) & (hi - x <= 1e-4 * width) & (grad < 0)
    if np.any(near_lo | near_hi):
        x = np.where(near_lo, lo, np.where(near_hi, hi, x))
        value, grad = value_and_grad(x)
        value, grad = float(value), np.asarray(grad)
    at_lo, at_hi = near_lo, near_hi
    hess = np.asarray(hessian(x))
    fresh = True  # hess was computed at x
    accepted = 0
    for _ in range(6):  # outer: release pinned parameters whose gradient points inside
        inner, damp = 0, 0.0
        while (inner < steps or damp > 0.0) and budget > 0:  # inner: Newton on the free set
            inner += 1
            budget -= 1
            free = ~(mask | at_lo | at_hi)
            if not np.any(free) or (gtol is not None and np.max(np.abs(grad[free])) < gtol):
                break
            if not fresh:
                hess = np.asarray(hessian(x))
                fresh = True
            block = hess[np.ix_(free, free)]
            size = max(float(np.max(np.abs(np.diag(block)))), 1.0)
            try:
                chol = np.linalg.cholesky(block + damp * np.eye(len(block)) if damp else block)
            except np.linalg.LinAlgError:
                # negative curvature: Levenberg-Marquardt damping until the system is positive definite
                damp = max(4.0 * damp, 1e-6 * size)
                if damp > 1e8 * size:
                    break
                continue
            step = np.zeros_like(x)
            step[free] = -scipy.linalg.cho_solve((chol, True), grad[free])
            if not np.all(np.isfinite(step)):
                break
            if gtol is None and not damp and 0.5 * float(-step[free] @ grad[free]) < 1e-15 * max(1.0, abs(value)):
                break  # converged: the Newton decrement is below round-off
            with np.errstate(divide="ignore", invalid="ignore"):
                room = np.where(step < 0, (lo - x) / step, np.where(step > 0, (hi - x) / step, np.inf))
            scale = min(1.0, float(np.min(room)))
            pinned = at_lo, at_hi
            if scale < 1.0:  # the step runs into a bound: pin the parameters that block it
                hit = free & (room <= scale * (1 + 1e-12) + 1e-300)
                at_lo, at_hi = at_lo | (hit & (step < 0)), at_hi | (hit & (step > 0))
                if scale <= 1e-12:
                    x = np.where(at_lo, lo, np.where(at_hi, hi, x))
                    value, grad = value_and_grad(x)
                    value, grad, fresh = float(value), np.asarray(grad), False
                    continue
            trial = np.clip(x + scale * step, lo, hi)
            trial = np.where(at_lo, lo, np.where(at_hi, hi, trial))
            t_value, t_grad = value_and_grad(trial)
            t_value = float(t_value)
            if not np.isfinite(t_value) or t_value > value + rtol * max(1.0, abs(value)):
                decrement = 0.5 * float(-step[free] @ grad[free])
                at_lo, at_hi = pinned  # a rejected step pins nothing
                if gtol is None and not damp and decrement < 1e-10 * max(1.0, abs(value)):
                    break  # a Newton step this small that does not descend: round-off, converged
                damp = max(4.0 * damp, 1e-4 * size)  # shorten and turn the step towards the gradient
                if damp > 1e8 * size:
                    break
                continue
            x, value, grad = trial, t_value, np.asarray(t_grad)
            fresh = False
            accepted += 1
            damp = 0.0 if damp < 1e-5 * size else damp / 8.0
        release = (at_lo & (grad < -1e-9)) | (at_hi & (grad > 1e-9))
        if not np.any(release):
            break
        at_lo, at_hi = at_lo & ~release, at_hi & ~release
    if not fresh and accepted and final_hessian:
        hess = np.asarray(hessian(x))
    return NewtonResult(x, value, grad, hess, (at_lo & (x == lo)) | (at_hi & (x == hi)), accepted)


def negative_curvature(hess: np.ndarray, free: np.ndarray, most: int = 2) -> list[tuple[float, np.ndarray]]:
    """(eigenvalue, direction) of the free block's clearly negative curvatures, most negative first."""
    if not np.any(free):
        return []
    block = hess[np.ix_(free, free)]
    if not np.all(np.isfinite(block)):
        return []
    w, v = np.linalg.eigh(0.5 * (block + block.T))
    tol = 1e-7 * max(float(np.max(np.abs(w))), 1.0)  # far above round-off, far below a real valley's curvature
    out = []
    for j in np.flatnonzero(w < -tol)[:most]:
        direction = np.zeros(len(free))
        direction[free] = v[:, j]
        out.append((float(w[j]), direction))
    return out


def leave_saddles(value_and_grad: Callable, hessian: Callable, point: NewtonResult, mask: np.ndarray,
                  lo: np.ndarray, hi: np.ndarray, final_hessian: bool, budget: int,
                  rounds: int = 6) -> tuple[NewtonResult, bool]:
    """Step off a saddle point of :func:`bounded_newton` along its negative curvature and minimise again,
    while that descends.

    A zero gradient with negative curvature is not a minimum, but damped
    Newton steps stop there. Each escape starts both ways along the most
    negative directions, far enough that the quadratic model predicts a drop
    of 2, and keeps the lowest point reached. Returns that point (its
    ``accepted`` counting the escapes' steps too) and whether a saddle remains.
    """
    best = point
    for _ in range(rounds):
        free = ~(mask | best.at_bound)
        directions = negative_curvature(best.hessian, free)
        if directions and not final_hessian:  # the Hessian may be from an earlier point
            best = best._replace(hessian=np.asarray(hessian(best.x)))
            directions = negative_curvature(best.hessian, free)
        if not directions:
            return best, False
        lowest = None
        for curvature, direction in directions:
            for sign in (1.0, -1.0):
                start = np.clip(best.x + sign * np.sqrt(4.0 / -curvature) * direction, lo, hi)
                trial = bounded_newton(value_and_grad, hessian, start, mask, lo, hi, budget=budget)
                if np.isfinite(trial.value) and (lowest is None or trial.value < lowest.value):
                    lowest = trial
        if lowest is None or not lowest.value < best.value - 1e-8 * max(1.0, abs(best.value)):
            return best, True
        best = lowest._replace(accepted=best.accepted + lowest.accepted)
    return best, bool(negative_curvature(best.hessian, ~(mask | best.at_bound)))
