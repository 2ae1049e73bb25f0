"""Stan's window adaptation pieces: dual averaging of the step size, Welford metric estimates, the schedule.

The algorithms and arithmetic of blackjax 1.7.1's ``dual_averaging_adaptation``,
``mass_matrix_adaptation`` (Welford estimator, shrinkage towards the previous
metric) and ``build_schedule`` (Apache-2.0, Copyright 2020- The Blackjax
Authors), written out here so that bayeshf's own kernels run without
importing blackjax, whose package import loads all of it (docs/benchmarks.md,
"As a user waits for it"). Same operations, same draws.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np


class DualAveragingState(NamedTuple):
    log_step_size: Any
    log_step_size_avg: Any
    step: Any
    avg_error: Any
    mu: Any


def dual_averaging(target: float, t0: int = 10, gamma: float = 0.05, kappa: float = 0.75):
    """(init(step_size), update(state, acceptance_rate)) of Hoffman & Gelman (2014, sec. 3.2.1)."""

    def init(step_size) -> DualAveragingState:
        return DualAveragingState(jnp.log(step_size), 0.0, 1, 0.0, jnp.log(10 * step_size))

    def update(state: DualAveragingState, acceptance_rate) -> DualAveragingState:
        log_step, avg_log_step, step, avg_error, mu = state
        gradient = target - acceptance_rate
        reg_step = step + t0
        eta_t = step ** (-kappa)
        avg_error = (1 - (1 / (reg_step))) * avg_error + gradient / reg_step
        log_x = mu - (jnp.sqrt(step) / gamma) * avg_error
        log_x_avg = eta_t * log_step + (1 - eta_t) * avg_log_step
        return DualAveragingState(log_x, log_x_avg, step + 1, avg_error, mu)

    return init, update


class WelfordState(NamedTuple):
    mean: Any
    m2: Any
    sample_size: Any


class MassMatrixState(NamedTuple):
    inverse_mass_matrix: Any
    welford: WelfordState


def mass_matrix(diagonal: bool, shrinkage: float = 0.0):
    """(init(ndim, inverse_mass_matrix), update(state, position), final(state)): Welford estimates of the
    covariance in a window, shrunk towards the previous metric (weight ``shrinkage``) and 1e-3 x I (weight 5)."""

    def welford(ndim: int) -> WelfordState:
        return WelfordState(jnp.zeros((ndim,)), jnp.zeros((ndim,) if diagonal else (ndim, ndim)), 0)

    def init(ndim: int, inverse_mass_matrix) -> MassMatrixState:
        return MassMatrixState(jnp.asarray(inverse_mass_matrix), welford(ndim))

    def update(state: MassMatrixState, position) -> MassMatrixState:
        mean, m2, sample_size = state.welford
        sample_size = sample_size + 1
        delta = position - mean
        mean = mean + delta / sample_size
        updated_delta = position - mean
        m2 = m2 + delta * updated_delta if diagonal else m2 + jnp.outer(updated_delta, delta)
        return MassMatrixState(state.inverse_mass_matrix, WelfordState(mean, m2, sample_size))

    def final(state: MassMatrixState) -> MassMatrixState:
        mean, m2, count = state.welford
        covariance = m2 / (count - 1)
        denom = count + 5 + shrinkage
        beta_data, beta_prev, beta_ident = count / denom, shrinkage / denom, 5 / denom
        regularisation = beta_ident * 1e-3 if diagonal else beta_ident * 1e-3 * jnp.identity(mean.shape[0])
        inverse_mass_matrix = beta_data * covariance + beta_prev * state.inverse_mass_matrix + regularisation
        return MassMatrixState(inverse_mass_matrix, welford(jnp.shape(inverse_mass_matrix)[-1]))

    return init, update, final


def build_schedule(num_steps: int, initial_buffer_size: int = 75, final_buffer_size: int = 50,
                   first_window_size: int = 25) -> np.ndarray:
    """Stan's warm-up schedule, (num_steps, 2) integers: (in a slow window, last step of a window)."""
    schedule: list[tuple[int, bool]] = []
    if num_steps < 20:  # too few steps to estimate a metric
        return np.array([(0, False)] * num_steps, dtype=int).reshape(num_steps, 2)
    if initial_buffer_size + first_window_size + final_buffer_size > num_steps:
        initial_buffer_size = int(0.15 * num_steps)
        final_buffer_size = int(0.1 * num_steps)
        first_window_size = num_steps - initial_buffer_size - final_buffer_size
    schedule += [(0, False)] * initial_buffer_size
    final_buffer_start = num_steps - final_buffer_size
    next_window_size, next_window_start = first_window_size, initial_buffer_size
    while next_window_start < final_buffer_start:
        current_start, current_size = next_window_start, next_window_size
        if 3 * current_size <= final_buffer_start - current_start:
            next_window_size = 2 * current_size
        else:
            current_size = final_buffer_start - current_start
        next_window_start = current_start + current_size
        schedule += [(1, False)] * (next_window_start - 1 - current_start) + [(1, True)]
    schedule += [(0, False)] * (num_steps - final_buffer_start)
    return np.array(schedule, dtype=int)
