"""``bayeshf sample``: posterior draws, summary, corner and predictive-check plots."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from bayeshf.algorithms import SAMPLERS, algorithm
from bayeshf.cli.common import (add_workspace_arguments, check_memory, check_netcdf_names, check_parameter, int_range,
                                model_from_args, output_dir, probability, seed)
from bayeshf.errors import BayeshfError


#: bulk and tail ESS every parameter should reach (Vehtari et al. 2021: 100 per chain for 4 chains)
DEFAULT_TARGET_ESS = 400
#: seconds a run may take to reach it
DEFAULT_MAX_TIME = 300.0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sample",
        help="sample the posterior (NUTS by default) and write posterior.nc, summary and plots",
        description="Sample the posterior of a workspace with the derived priors (or --priors) and write "
        "DIR/posterior.nc (ArviZ InferenceData), DIR/summary.json, DIR/corner.png and DIR/ppc.png; "
        "print a summary table with convergence warnings.",
    )
    add_workspace_arguments(parser)
    parser.add_argument("--priors", default=None, metavar="FILE", help="priors file (JSON or YAML) overriding the derived priors")
    parser.add_argument("--shapesys", choices=["flat", "unit-mean"], default="flat",
                        help="shapesys prior convention: flat = Gamma(aux+1, rate tau) (default), unit-mean = Gamma(aux, rate tau)")
    parser.add_argument("--chains", type=int_range(1, 10_000), default=4, help="number of chains (default 4)")
    parser.add_argument("--warmup", type=int_range(0, 10**8), default=1000, help="warm-up steps per chain (default 1000)")
    parser.add_argument("--draws", type=int_range(1, 10**8), default=None,
                        help="kept draws per chain, at least (default 1000); --target-ess may add more")
    parser.add_argument("--sampler", choices=SAMPLERS, default="nuts",
                        help="sampler (default nuts; nuts, hmc and mh are bayeshf's kernels, blackjax-* "
                             "blackjax's kernels of the same algorithms, slower on CPU)")
    parser.add_argument("--metric", choices=["auto", "diagonal", "dense"], default="auto",
                        help="inverse mass matrix adapted in warm-up (default auto = diagonal: chains already run on "
                        "coordinates whitened by the Laplace covariance at the mode, so correlations are taken care of)")
    parser.add_argument("--target-acceptance", type=probability, default=None, metavar="P",
                        help="target acceptance rate of the step-size adaptation (default: nuts 0.9, hmc 0.8, mh 0.234; "
                        "0.99 above 100 free parameters mostly normsys/histosys, see docs/sampling.md)")
    parser.add_argument("--target-ess", type=float, default=DEFAULT_TARGET_ESS, metavar="N",
                        help=f"after --draws, keep drawing until every parameter's bulk and tail ESS reach N and every "
                        f"R-hat is below 1.01 (default {DEFAULT_TARGET_ESS}; 0: exactly --draws); a run that ends short "
                        "says so in one line and in summary.json")
    parser.add_argument("--max-time", type=float, default=DEFAULT_MAX_TIME, metavar="SECONDS",
                        help=f"stop drawing for --target-ess after this many seconds of the run (default {DEFAULT_MAX_TIME:g})")
    parser.add_argument("--seed", type=seed, default=0, help="random seed (default 0); the same seed gives the same draws")
    parser.add_argument("--out", "-o", type=output_dir, default="bayeshf-sample", metavar="DIR", help="output directory (default bayeshf-sample)")
    parser.add_argument("--corner-vars", nargs="+", default=None, metavar="NAME",
                        help="parameters for the corner plot (default: the POI and those most correlated with it)")
    parser.add_argument("--backend", choices=["blackjax", "bat"], default="blackjax",
                        help="blackjax (default) or BAT.jl through Julia (needs `bayeshf julia setup`)")
    parser.add_argument("--likelihood", choices=["litehf", "jax"], default="litehf",
                        help="with --backend bat: LiteHF.jl likelihood or the JAX log-density as a callback")
    parser.add_argument("--no-plots", action="store_true", help="skip corner.png and ppc.png")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when the diagnostics warn (R-hat > 1.01, ESS short of --target-ess, "
                        "divergences): the outputs are written, but the run is not a trustworthy result")
    parser.set_defaults(func=run, before_jax=_start_writer)


def _start_writer(args: argparse.Namespace) -> None:
    """Fork the output writer (bayeshf.cli._writer) while no JAX thread exists; otherwise write in-process."""
    from bayeshf.runtime import backend_started

    from bayeshf import cli

    args.writer = None
    # only in the command's own process (cli.entry): a process that called main() may hold threads or capture
    # its output in objects a fork would copy
    if cli._OWN_PROCESS and args.backend == "blackjax" and not backend_started():
        from bayeshf.cli import _writer

        args.writer = _writer.fork()


def _import_in_background(*modules: str) -> None:
    """Import the output libraries (arviz ~2 s, matplotlib, corner) on a thread while JAX traces and compiles."""
    import importlib
    import threading

    def work():
        try:
            import matplotlib

            matplotlib.use("Agg", force=False)  # the CLI only writes files (as bayeshf.plots does)
        except Exception:  # pragma: no cover
            pass
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # pragma: no cover - the real import reports it later
                return

    threading.Thread(target=work, name="bayeshf-imports", daemon=True).start()


def run(args: argparse.Namespace) -> int:
    writer = getattr(args, "writer", None)
    try:
        return _run(args, writer)
    finally:
        if writer is not None:
            writer.close()


def _run(args: argparse.Namespace, writer) -> int:
    if writer is None:
        _import_in_background("arviz", "matplotlib.pyplot", "corner")
    model = model_from_args(args)
    if args.draws is None:
        from bayeshf.sampling import default_draws

        args.draws = default_draws(model, args.sampler)
    if not args.target_ess >= 0 or not args.max_time > 0:
        raise BayeshfError(f"--target-ess must be at least 0 and --max-time positive (got {args.target_ess:g} and "
                           f"{args.max_time:g}).")
    for name in args.corner_vars or []:
        check_parameter(model, name, "--corner-vars")
    check_netcdf_names(model)
    check_memory(model, "bayeshf sample", chains=args.chains, steps=args.warmup + args.draws)
    out = Path(args.out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if args.backend == "bat":
            from bayeshf import julia

            steps = args.draws
            idata = julia.sample(model, likelihood=args.likelihood, sampler="mh" if algorithm(args.sampler) == "mh" else "hmc",
                                 chains=args.chains, steps=steps, seed=args.seed, priors=args.priors,
                                 shapesys=args.shapesys)
        else:
            from bayeshf.sampling import auto_chunk, posterior_for, sample

            posterior = posterior_for(model, args.priors, shapesys=args.shapesys)  # also the MAP marker's

            # metric auto = diagonal: the chains run on coordinates whitened by the Laplace covariance, so
            # correlations are already taken care of (a dense metric measured no better on ttbar,
            # docs/sampling.md); the target acceptance, when not given, is bayeshf.sampling's default
            metric = "diagonal" if args.metric == "auto" else args.metric
            idata = sample(posterior, sampler=args.sampler, chains=args.chains, warmup=args.warmup, draws=args.draws,
                           metric=metric, seed=args.seed, target_acceptance=args.target_acceptance,
                           progress=not args.quiet,
                           target_ess=args.target_ess or None, max_time=args.max_time,
                           # chunks as with a progress bar even when quiet: Ctrl-C keeps the chunks done
                           chunk_size=auto_chunk(args.warmup + args.draws),
                           # with a writer: NumPy groups it assembles, and its ArviZ for the ESS of --target-ess
                           as_groups=writer is not None,
                           convergence=None if writer is None else writer.convergence_table)
    for warning in caught:
        if issubclass(warning.category, (DeprecationWarning, FutureWarning)):
            continue
        print(f"bayeshf sample: warning: {warning.message}", file=sys.stderr)
    marker = _map_marker(posterior) if args.backend != "bat" and not args.no_plots else None
    warned = None
    if writer is not None:
        warned = writer.write(*idata, out, corner_vars=args.corner_vars, plots=not args.no_plots, map_marker=marker)
        if warned is None:  # the writer is gone: assemble here
            from bayeshf.assemble import assemble

            idata = assemble(*idata)
    if warned is None:
        if marker is not None:
            idata.posterior.attrs["map"] = marker
        warned = write_outputs(idata, out, corner_vars=args.corner_vars, plots=not args.no_plots).warnings
    # --strict: a run whose diagnostics warn (R-hat, ESS short of the target, divergences) is not a result
    return 1 if args.strict and warned else 0


#: the corner plot marks the MAP up to this many parameters (a search of about a second there; ttbar's 132 take tens)
MAP_MARKER_MAX_PARS = 100


def _map_marker(posterior) -> list[float] | None:
    """The posterior's maximum (bayeshf.laplace.find_map), for the posterior's ``map`` attribute the corner plot
    marks; None above MAP_MARKER_MAX_PARS parameters or when the search fails."""
    if posterior.model.npars > MAP_MARKER_MAX_PARS:
        return None
    import numpy as np

    from bayeshf.laplace import find_map

    try:
        theta = find_map(posterior)
    except Exception as error:  # a marker is a courtesy: never lose a finished run over it
        print(f"bayeshf sample: warning: no MAP marker on the corner plot ({error}).", file=sys.stderr)
        return None
    return [float(v) for v in theta] if np.all(np.isfinite(theta)) else None


def write_outputs(idata, out: Path, *, corner_vars=None, plots: bool = True, fork_plots: bool = False):
    """posterior.nc (atomic), summary.json, corner.png, ppc.png; prints the table and warnings.

    ``fork_plots``: draw the plots in a forked process while this one writes posterior.nc and the summary
    (the writer process does; where ``os.fork`` is missing they are drawn here).
    """
    from bayeshf.diagnostics import format_table, summarize
    from bayeshf.io import atomic_path, write_json

    out.mkdir(parents=True, exist_ok=True)
    if plots and idata.posterior.sizes.get("draw", 0) < 2:
        print(f"bayeshf sample: warning: {idata.posterior.sizes.get('draw', 0)} draw per chain is too few for the "
              "corner and predictive plots; not drawn (take --draws 2 or more).", file=sys.stderr)
        plots = False
    drawer = _fork_plots(idata, out, corner_vars) if plots and fork_plots else None
    with atomic_path(out / "posterior.nc") as tmp:
        idata.to_netcdf(str(tmp), engine="h5netcdf")
    summary = summarize(idata)
    document = summary.to_dict()
    document["settings"] = {k: v for k, v in idata.posterior.attrs.items() if k not in ("par_names", "map")}
    write_json(out / "summary.json", document)
    _say(format_table(summary, max_rows=60), sys.stdout)
    for message in summary.warnings:
        _say(f"bayeshf sample: warning: {message}", sys.stderr)
    if drawer is not None:
        plots = os.waitstatus_to_exitcode(os.waitpid(drawer, 0)[1]) == 0
    elif plots:
        _draw_plots(idata, out, corner_vars)
    _say(f"wrote {out / 'posterior.nc'}, summary.json{', corner.png, ppc.png' if plots else ''}", sys.stderr)
    return summary


def _say(text: str, stream) -> None:
    """Print, but a reader that went away (``| head``) stops no output file from being written."""
    try:
        print(text, file=stream, flush=True)
    except BrokenPipeError:
        pass


def _draw_plots(idata, out: Path, corner_vars) -> None:
    from bayeshf.plots import bayes

    bayes.corner(idata, corner_vars, out=out / "corner.png")
    bayes.ppc(idata, out=out / "ppc.png")
    import matplotlib.pyplot as plt

    plt.close("all")


def _fork_plots(idata, out: Path, corner_vars) -> int | None:
    """Draw the plots in a forked process (its pid; None where os.fork is missing). It exits 0 when both
    were written, 1 after one line on standard error when not."""
    from bayeshf.cli._writer import run_forked

    def work() -> int:
        try:
            _draw_plots(idata, out, corner_vars)
            return 0
        except Exception as error:
            print(f"bayeshf sample: warning: the corner and predictive plots were not written ({error}).",
                  file=sys.stderr)
            return 1

    return run_forked(work)
