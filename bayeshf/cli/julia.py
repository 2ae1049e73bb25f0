"""``bayeshf julia setup|status``: install the Julia side of the bridge, or say why it cannot run."""

from __future__ import annotations

import argparse
import contextlib
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
    if not args.download:
        check_pinned_julia()
    print(f"resolving {', '.join(wanted)} with juliapkg (this can take several minutes the first time)",
          file=sys.stderr)
    try:
        with contextlib.nullcontext() if args.download else julia_lookup_only():
            juliapkg.resolve()
        executable, project = juliapkg.executable(), juliapkg.project()
    except BayeshfError:
        raise
    except Exception as error:  # juliapkg raises plain Exceptions (no Julia, no network, resolver conflicts)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if first.startswith("could not find Julia"):
            raise BayeshfError(no_matching_julia(first.removeprefix("could not find Julia").strip())) from error
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


@contextlib.contextmanager
def julia_lookup_only():
    """Within: juliapkg may look for Julia but never install it (the default of `bayeshf julia setup`).

    ``juliapkg.resolve()`` calls ``find_julia(..., install=True, upgrade=True)``,
    which downloads a Julia into juliapkg's prefix (or adds one through juliaup)
    when it accepts none of those installed, e.g. a Julia 1.12 when Python's
    OpenSSL is older than 3.5. Here the call is made with ``install=False,
    upgrade=False``: juliapkg's override, its prefix, juliaup's installed
    versions and ``julia`` on PATH are looked at, nothing is downloaded.
    """
    import juliapkg.deps

    original = getattr(juliapkg.deps, "find_julia", None)
    if original is None:  # a juliapkg that resolves differently: do not guess
        raise BayeshfError(
            f"juliapkg {_juliapkg_version()} finds Julia in a way bayeshf does not know how to keep from downloading; "
            "set PYTHON_JULIAPKG_EXE to your julia executable or run `bayeshf julia setup --download`."
        )

    def look_only(*args, **kwargs):
        kwargs.update(install=False, upgrade=False)
        return original(*args, **kwargs)

    juliapkg.deps.find_julia = look_only
    try:
        yield
    finally:
        juliapkg.deps.find_julia = original


def _juliapkg_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("juliapkg")
    except PackageNotFoundError:  # pragma: no cover
        return "(unknown version)"


def _openssl_limit() -> str:
    """Why juliapkg limits Julia's version here, or '' (juliacall's OpenSSL_jll "<=python" rule)."""
    import ssl

    try:
        from juliapkg.deps import openssl_compat

        limit = openssl_compat()[1]
    except Exception:  # pragma: no cover - another juliapkg
        return ""
    if not limit:
        return ""
    return (f" (juliacall requires an OpenSSL no newer than Python's, {ssl.OPENSSL_VERSION.split(' ')[1]}, "
            "and Julia 1.12 needs OpenSSL 3.5, so juliapkg accepts no Julia newer than 1.11)")


def no_matching_julia(compat: str) -> str:
    """The sentence for: juliapkg found no Julia it accepts, and may not download one."""
    wanted = f"Julia {compat}" if compat else "a Julia"
    return (f"juliapkg accepts {wanted} here{_openssl_limit()} and found none installed: install one "
            "(e.g. `juliaup add 1.11`) and set PYTHON_JULIAPKG_EXE to it, or run `bayeshf julia setup --download` "
            "to let juliapkg download it.")


def check_pinned_julia() -> None:
    """With PYTHON_JULIAPKG_EXE set juliapkg uses that Julia whatever its version: refuse one it would not accept."""
    try:
        from juliapkg.deps import find_requirements
        from juliapkg.find_julia import julia_version
        from juliapkg.state import STATE
    except ImportError:  # pragma: no cover - another juliapkg
        return
    exe = STATE.get("override_executable")
    if not exe:
        return
    compat = find_requirements()[0]
    version = julia_version(exe)
    if compat is not None and version is not None and version not in compat:
        raise BayeshfError(
            f"PYTHON_JULIAPKG_EXE is Julia {version} ({exe}) but juliapkg accepts Julia {compat} here"
            f"{_openssl_limit()}: point it to a Julia in that range, or unset it and run "
            "`bayeshf julia setup --download`."
        )
