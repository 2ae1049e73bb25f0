"""Benchmarks of bayeshf against its peers: suites timed the same way in one process (a repository tool, not shipped).

Run a suite with ``python -m benchmarks SUITE`` from the repository root, or
``bayeshf bench SUITE`` with an editable install of the repository; both call
:func:`main`. Suites:

- ``logdensity``  value, value+gradient, Hessian-vector product per call
- ``sampling``    NUTS / HMC / MH wall time and ESS/s, cold and warm
- ``samplers``    NUTS of bayeshf, numpyro and nutpie on bayeshf's log-density: ESS per gradient and per second over seeds
- ``fit``         maximum-likelihood fit wall time and the twice_nll reached
- ``nbin``        the three suites above over thesis n-bin models, n = 1 ... 1000
                  (``--parts`` picks some of them; the others' rows are kept)
- ``large``       the synthetic 10,000-bin x 1,000-systematic model (bayeshf only)
- ``coldstart``   whole commands in fresh processes (bayeshf fit / sample, NextStat, bare JAX)
- ``diff``        bayeshf.diff: gradient of profiled Z0 and the expected limit vs one evaluation
- ``toys``        toy-based CLs (10,000 toys, fits batched) against pyhf's ToyCalculator
- ``grid``        CLs and upper limits for a 125-point signal grid against a pyhf loop
- ``report``      regenerate plots and docs/benchmarks.md from recorded results
- ``all``         every suite, then the report

Adding a suite: write ``benchmarks/<module>.py`` with ``run(options, recorder)``
(:class:`Options` in, rows through :class:`benchmarks.harness.Recorder`; honour
``options.quick``) and add one line ``"<suite>": "<module>"`` to :data:`SUITES`. A module-level
``report_section(data, command, machine) -> list[str]`` (markdown lines) puts its results in
docs/benchmarks.md (``report``).

Results go to ``<output>/<suite>.json`` (``--output``; default
benchmarks/results). Layout: suites and the harness here, recorded results in
benchmarks/results/, plots in benchmarks/plots/, summary in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bayeshf.errors import BayeshfError

#: suite name -> module in benchmarks
SUITES = {
    "logdensity": "logdensity",
    "sampling": "sampling",
    "samplers": "samplers",
    "fit": "fitting",
    "nbin": "nbin",
    "large": "large",
    "coldstart": "coldstart",
    "diff": "diff",
    "toys": "toys",
    "grid": "grid",
}

#: where results are recorded unless ``--output`` says otherwise
REPO_RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Options:
    """Options shared by the suites (None means the suite's default)."""

    quick: bool = False
    repeats: int = 7
    min_time: float = 0.2
    seed: int = 0
    data: str | None = None
    output: Path | None = None
    cases: list[str] | None = None
    implementations: list[str] | None = None
    steps: list[int] | None = None
    sizes: list[int] | None = None
    parts: list[str] | None = None
    n_bins: int | None = None
    n_systematics: int | None = None
    baseline: str | None = None
    argv: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def default_output() -> Path:
    """The repository's benchmarks/results."""
    return REPO_RESULTS


def _int_list(text: str) -> list[int]:
    try:
        return [int(float(v)) for v in text.split(",") if v.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from error


def _str_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The harness options, shared by ``python -m benchmarks`` and ``bayeshf bench``."""
    parser.add_argument("suite", metavar="SUITE", choices=[*SUITES, "report", "all"],
                        help="one of: " + ", ".join([*SUITES, "report", "all"]))
    parser.add_argument("--quick", action="store_true",
                        help="smoke-test sizes (under a minute per suite); results go to <output>/quick/")
    parser.add_argument("--output", "-o", type=Path, default=None, metavar="DIR",
                        help="results folder (default: the repository's benchmarks/results)")
    parser.add_argument("--no-save", action="store_true", help="print only, write no result file")
    parser.add_argument("--data", default=None, metavar="DIR",
                        help="folder with thesis/, sbottom/, atlas-examples/ workspaces (default: the repository's tests/data)")
    parser.add_argument("--repeats", type=int, default=None, help="timing repeats per measurement (default 7; 3 with --quick)")
    parser.add_argument("--min-time", type=float, default=None,
                        help="seconds per timing loop (default 0.2; 0.02 with --quick)")
    parser.add_argument("--seed", type=int, default=0, help="seed of points, samplers and generated models")
    parser.add_argument("--cases", type=_str_list, default=None, metavar="A,B",
                        help="workspace cases (e.g. thesis_2_bin_corr,ttbar_ljets,nbin_50)")
    parser.add_argument("--implementations", "--impl", type=_str_list, default=None, metavar="A,B",
                        help="only these implementations (e.g. bayeshf,pyhf-jax)")
    parser.add_argument("--steps", type=_int_list, default=None, metavar="N,M",
                        help="sampling: draws per chain (default 5000,10000,50000)")
    parser.add_argument("--sizes", type=_int_list, default=None, metavar="N,M",
                        help="nbin: numbers of bins (default 1,2,5,10,20,50,100,200,500,1000)")
    parser.add_argument("--parts", type=_str_list, default=None, metavar="A,B",
                        help="nbin: which suites to sweep, of logdensity,fit,sampling (default all three); "
                             "rows of the other parts already in nbin.json are kept")
    parser.add_argument("--bins", dest="n_bins", type=int, default=None, help="large: number of bins (default 10000)")
    parser.add_argument("--systematics", dest="n_systematics", type=int, default=None,
                        help="large: number of systematics (default 1000)")
    parser.add_argument("--baseline", default=None, metavar="DIR",
                        help="coldstart: also run the bayeshf commands from this source tree of another revision "
                             "(e.g. `git worktree add DIR REV`), in the same rounds")


def options_from_args(args: argparse.Namespace, argv: list[str]) -> Options:
    quick = bool(args.quick)
    output = None if args.no_save else (args.output or default_output())
    if output is not None and quick:
        output = Path(output) / "quick"
    return Options(
        quick=quick,
        repeats=args.repeats or (3 if quick else 7),
        min_time=args.min_time if args.min_time is not None else (0.02 if quick else 0.2),
        seed=args.seed,
        data=args.data,
        output=output,
        cases=args.cases,
        implementations=args.implementations,
        steps=args.steps,
        sizes=args.sizes,
        parts=args.parts,
        n_bins=args.n_bins,
        n_systematics=args.n_systematics,
        baseline=args.baseline,
        argv=list(argv),
    )


def run_suite(name: str, options: Options) -> Path | None:
    """Run one suite, write its JSON, return the path (None with ``--no-save``)."""
    from benchmarks.harness import Recorder

    from benchmarks.cases import check_case

    if name not in SUITES:
        raise BayeshfError(f"unknown benchmark suite {name!r}; choose one of {', '.join(SUITES)}.")
    for case in options.cases or []:
        check_case(case)
    module = importlib.import_module(f"benchmarks.{SUITES[name]}")
    print(f"suite {name}{' (quick)' if options.quick else ''}", file=sys.stderr)
    recorder = Recorder(name, options.as_dict(), options.output)
    try:
        module.run(options, recorder)
    except BaseException:
        recorder.suite = f"{name}.partial"  # keep the last complete results in place
        recorder.save()
        raise
    return recorder.save()


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Entry point after parsing: run the suite(s) and/or the report."""
    from bayeshf.runtime import configure

    configure(compilation_cache=False)  # bayeshf as its command line runs it (cold compilation is timed)
    options = options_from_args(args, argv)
    suites = list(SUITES) if args.suite == "all" else ([] if args.suite == "report" else [args.suite])
    for name in suites:
        run_suite(name, options)
    if args.suite in ("report", "all") and not options.quick:
        from benchmarks.report import write_report

        write_report(args.output or default_output())
    return 0


def main(argv: list[str] | None = None, prog: str = "python -m benchmarks") -> int:
    """``python -m benchmarks SUITE [options]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args, argv)
    except BayeshfError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
