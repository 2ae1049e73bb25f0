"""Optimise a selection cut and the bin edges of a fit by gradient steps through the profiled fits.

A generated signal and background (fixed seed) with two variables per event:
``c``, cut on, and ``x``, histogrammed in four bins on [0, 1]. The cut and
the three inner bin edges are the parameters. Events pass the cut through a
sigmoid and fill the bins through a soft histogram (bayeshf.diff.soft_histogram),
so the yields are smooth functions of the parameters; the HistFactory model
(signal with a normfactor; background with a 5% normsys and a histosys from an
x-scale shift of +-5%, its templates histogrammed the same way) takes them as
traced inputs, and JAX differentiates the expected discovery significance Z0
and the expected 95% CLs upper limit through the profiled fits
(bayeshf.diff). Two runs: maximise Z0, then, from the same start, minimise the
limit. Prints the objective per step and writes a plot.

    python examples/optimise_cut.py [--steps 40] [--out optimise_cut.png]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import bayeshf
import bayeshf.diff as diff

BINS = 4
SHIFT = 0.05  # the histosys: x scaled by 1 +- SHIFT
BANDWIDTH_CUT = 0.1
BANDWIDTH_X = 0.02


def generate(seed: int = 0):
    """Signal and background events (c, x, weight): 40 signal and 1000 background events expected."""
    rng = np.random.default_rng(seed)
    n_s, n_b = 20_000, 50_000
    signal = (rng.normal(1.0, 0.8, n_s), rng.beta(5.0, 2.0, n_s), np.full(n_s, 40.0 / n_s))
    background = (rng.normal(-0.5, 1.0, n_b), rng.beta(2.0, 3.0, n_b), np.full(n_b, 1000.0 / n_b))
    return signal, background


def spec(nbins: int = BINS):
    """The workspace: one channel, placeholder yields (replaced by the traced ones at every step)."""
    ones = [1.0] * nbins
    return {
        "channels": [{"name": "SR", "samples": [
            {"name": "signal", "data": ones, "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
            {"name": "background", "data": ones, "modifiers": [
                {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.05, "lo": 0.95}},
                {"name": "x_scale", "type": "histosys", "data": {"hi_data": ones, "lo_data": ones}},
            ]},
        ]}],
        "observations": [{"name": "SR", "data": ones}],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


def edges_of(params):
    """Increasing edges on [0, 1] from unconstrained logits (bin widths are their softmax)."""
    widths = jax.nn.softmax(params["logits"])
    return jnp.concatenate([jnp.zeros(1), jnp.cumsum(widths)])


def histograms(params, events):
    signal, background = events
    edges = edges_of(params)

    def hist(c, x, w):
        passing = w * jax.nn.sigmoid((c - params["cut"]) / BANDWIDTH_CUT)
        return diff.soft_histogram(x, edges, passing, bandwidth=BANDWIDTH_X)

    s = hist(*signal)
    b = hist(*background)
    b_up = hist(background[0], background[1] * (1 + SHIFT), background[2])
    b_down = hist(background[0], background[1] * (1 - SHIFT), background[2])
    return s, b, b_up, b_down


def objectives(model, events):
    """(expected Z0, expected upper limit) as functions of the parameters."""

    def substituted(params):
        s, b, b_up, b_down = histograms(params, events)
        m = model.with_yields({"signal": s, "background": b}, histosys={"x_scale": {"background": (b_up, b_down)}})
        return m, s, b

    def z0(params):
        m, s, b = substituted(params)
        return diff.significance(m, expected=True, data=s + b)  # Asimov data of mu = 1

    def limit(params):
        m, s, b = substituted(params)
        return diff.upper_limit(m, expected=True, data=b)  # Asimov data of mu = 0

    return z0, limit


def adam(objective, params, steps, rate, sign, label):
    """Adam steps on sign * objective (sign +1 maximises), the rate decaying to 0 on a cosine.

    Returns the objective per step and the final parameters.
    """
    value_and_grad = jax.jit(jax.value_and_grad(objective))
    m = jax.tree_util.tree_map(jnp.zeros_like, params)
    v = jax.tree_util.tree_map(jnp.zeros_like, params)
    history = []
    for step in range(steps + 1):
        start = time.perf_counter()
        value, grad = value_and_grad(params)
        history.append(float(value))
        edges = np.asarray(edges_of(params))
        print(f"{label} step {step:2d}: {float(value):.4f}   cut {float(params['cut']):+.3f}   "
              f"edges {np.array2string(edges, precision=3, separator=' ')}   ({time.perf_counter() - start:.2f} s)")
        if step == steps:
            break
        m = jax.tree_util.tree_map(lambda a, g: 0.9 * a + 0.1 * sign * g, m, grad)
        v = jax.tree_util.tree_map(lambda a, g: 0.999 * a + 0.001 * g * g, v, grad)
        t = step + 1
        lr = rate * 0.5 * (1 + np.cos(np.pi * step / steps))
        params = jax.tree_util.tree_map(
            lambda p, a, b: p + lr * (a / (1 - 0.9**t)) / (jnp.sqrt(b / (1 - 0.999**t)) + 1e-12), params, m, v)
    return history, params


def plot(out, histories, finals, events):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5), constrained_layout=True)
    (z_ax, l_ax), hist_axes = axes
    z_ax.plot(histories["Z0"], "o-", color="C0", ms=3)
    z_ax.set(xlabel="gradient step", ylabel="expected $Z_0$", title="maximise the expected significance")
    l_ax.plot(histories["limit"], "o-", color="C3", ms=3)
    l_ax.set(xlabel="gradient step", ylabel=r"expected 95% CLs limit on $\mu$",
             title="minimise the expected upper limit")
    for ax, (name, params) in zip(hist_axes, finals.items()):
        s, b, _, _ = (np.asarray(h) for h in histograms(params, events))
        edges = np.asarray(edges_of(params))
        widths = np.diff(edges)
        ax.bar(edges[:-1], b, widths, align="edge", color="C7", alpha=0.6, label="background")
        ax.bar(edges[:-1], s, widths, bottom=b, align="edge", color="C1", alpha=0.8, label="signal")
        ax.set(xlabel="x", ylabel="expected events per bin", xlim=(0, 1),
               title=f"after optimising {name}: cut c > {float(params['cut']):.2f}")
        ax.legend()
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="optimise_cut.png")
    args = parser.parse_args(argv)
    events = tuple(tuple(jnp.asarray(a) for a in sample) for sample in generate(args.seed))
    model = bayeshf.load(spec())
    z0, limit = objectives(model, events)
    # explicit dtypes: a weakly typed start would change type after one step and compile everything twice
    start = {"cut": jnp.asarray(-1.0, dtype=jnp.float64), "logits": jnp.zeros(BINS, dtype=jnp.float64)}
    histories, finals = {}, {}
    histories["Z0"], finals["Z0"] = adam(z0, start, args.steps, args.rate, +1.0, "Z0   ")
    histories["limit"], finals["limit"] = adam(limit, start, args.steps, args.rate, -1.0, "limit")
    print(f"Z0: {histories['Z0'][0]:.4f} -> {histories['Z0'][-1]:.4f};   "
          f"expected limit: {histories['limit'][0]:.4f} -> {histories['limit'][-1]:.4f}")
    plot(args.out, histories, finals, events)


if __name__ == "__main__":
    main()
