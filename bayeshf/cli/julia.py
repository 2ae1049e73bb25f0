"""``bayeshf julia setup|status``: install the Julia side of the bridge, or say why it cannot run."""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

from bayeshf.errors import BayeshfError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "julia", help="set up or check the Julia bridge (BAT.jl + LiteHF.jl through juliacall)",
        description="Set up or check the Julia bridge used by `bayeshf sample --backend bat`.")
    actions = parser.add_subparsers(dest="julia_command", metavar="ACTION")
    setup = actions.add_parser(
        "setup", help="install/resolve Julia packages with juliapkg and report what was installed",
        description="Resolve bayeshf/juliapkg.json with juliapkg (installing the Julia packages), "
                    "load the bridge module once, and report the installed versions.")
    setup.add_argument("--download", action="store_true",
                       help="let juliapkg download Julia itself when none is found (needs the internet)")
    setup.add_argument("--no-load", dest="load", action="store_false",
                       help="do not start Julia to precompile and load the bridge afterwards")
    setup.set_defaults(func=run_setup)
    status = actions.add_parser("status", help="say whether the bridge can run here, and why not")
    status.set_defaults(func=run_status)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def installed_versions(manifest: str | Path, names) -> dict[str, str]:
    """Versions of ``names`` in a Julia Manifest.toml (format 2: ``[[deps.NAME]]``); absent ones omitted."""
    path = Path(manifest)
    if not path.is_file():
        return {}
    data = tomllib.loads(path.read_text())
    deps = data.get("deps", data)  # format 1 manifests list packages at the top level
    found = {}
    for name in names:
        entries = deps.get(name) or []
        if entries and "version" in entries[0]:
            found[name] = str(entries[0]["version"])
    return found


def run_status(args: argparse.Namespace) -> int:
    from bayeshf.julia.environment import available, juliapkg_file, packages_ready

    ok, reason = available()
    if ok:
        print(f"Julia found: {reason}")
        ready = packages_ready()
        print(f"Julia packages of {juliapkg_file()}: " + ("installed" if ready else "not installed (run `bayeshf julia setup`)"))
        return 0 if ready else 1
    print(reason, file=sys.stderr)
    return 1


def run_setup(args: argparse.Namespace) -> int:
    from bayeshf.julia.environment import JULIACALL_MISSING, available, juliapkg_file, load_bridge

    ok, reason = available()
    if not ok and (reason == JULIACALL_MISSING or not args.download):
        raise BayeshfError(reason)
    import juliapkg

    wanted = sorted(json.loads(juliapkg_file().read_text())["packages"])
    print(f"resolving {', '.join(wanted)} with juliapkg (this can take several minutes the first time)",
          file=sys.stderr)
    try:
        juliapkg.resolve()
        executable, project = juliapkg.executable(), juliapkg.project()
    except Exception as error:  # juliapkg raises plain Exceptions (no Julia, no network, resolver conflicts)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BayeshfError(f"juliapkg could not set up the Julia packages of {juliapkg_file()} ({first}).") from error
    versions = installed_versions(Path(project) / "Manifest.toml", wanted + ["PythonCall"])
    print(f"Julia: {executable}")
    print(f"Julia project: {project}")
    for name in wanted + ["PythonCall"]:
        print(f"  {name} {versions.get(name, '(not in the manifest)')}")
    if args.load:
        load_bridge()
        print("BayesHFBridge loaded: `bayeshf sample WORKSPACE --backend bat` is ready.")
    return 0
