"""``bayeshf ranking``: nuisance parameters ranked by their impact on the POI, with pulls."""

from __future__ import annotations

import argparse

from bayeshf.cli._freq import add_common, emit, fmt, load_model, wrote


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "ranking",
        help="impacts of the nuisance parameters on the POI, ranked (refit or Hessian)",
        description="Pre- and post-fit impacts on the POI of every free nuisance parameter (refit at +-1 sigma, "
        "or the linear Hessian estimate with --method hessian), ranked by post-fit impact, plus grouped impacts "
        "by modifier type.",
    )
    add_common(parser, plot_help="write the ranking plot to FILE")
    parser.add_argument("--method", choices=["refit", "hessian"], default="refit",
                        help="refit at +-1 sigma (default) or the Hessian (linear, fast)")
    parser.add_argument("--top", type=int, default=20, help="parameters to show (default 20; JSON has all)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import bayeshf
    from bayeshf.impacts import grouped_impacts, impacts

    model = load_model(args)
    result = bayeshf.fit(model, method=args.fit_method)
    if args.method == "refit" and model.poi_index is not None and result.at_bound[model.poi_index]:
        import warnings

        # refits cannot move a POI pinned on its bound: every refit impact would read 0
        warnings.warn(f"the best fit of {model.poi_name} sits on its bound ({result.poi:g}), where refit impacts "
                      "are all zero; showing Hessian impacts instead.", stacklevel=1)
        args.method = "hessian"
    ranked = impacts(model, method=args.method, fit_result=result, fit_method=args.fit_method,
                     progress=not args.json).ranked()
    groups = grouped_impacts(model, fit_result=result)
    document = ranked.to_dict()
    document["grouped"] = groups.to_dict()
    lines = [f"{ranked.poi_name} = {fmt(ranked.poi_bestfit)} +- {fmt(ranked.poi_uncertainty, 4)} "
             f"({args.method} impacts, largest first)",
             f"{'parameter':<44} {'pull':>8} {'post +':>10} {'post -':>10} {'pre +':>10} {'pre -':>10}"]
    for k in range(min(args.top, len(ranked.par_names))):
        width = ranked.prefit_uncertainty[k]
        pull = (ranked.bestfit[k] - ranked.prefit_centre[k]) / width if width == width else float("nan")
        lines.append(f"{ranked.par_names[k]:<44} {fmt(pull, 3):>8} {fmt(ranked.postfit_up[k], 3):>10} "
                     f"{fmt(ranked.postfit_down[k], 3):>10} {fmt(ranked.prefit_up[k], 3):>10} "
                     f"{fmt(ranked.prefit_down[k], 3):>10}")
    lines.append("grouped impacts (Hessian): " + ", ".join(f"{k} {fmt(v, 3)}" for k, v in groups.groups.items()))
    emit(args, document, "\n".join(lines))
    if args.plot:
        from bayeshf.plots import freq

        freq.ranking(ranked, out=args.plot, max_pars=args.top)
        wrote(args.plot)
    return 0
