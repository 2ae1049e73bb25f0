"""Finding Julia and the bridge's Julia sources without starting (or downloading) anything.

juliacall starts Julia when it is imported and, through juliapkg, downloads
Julia when none is found; offline that can hang for minutes. So the bridge
looks for an executable first, the way juliapkg would, and imports juliacall
only when one exists:

1. ``PYTHON_JULIACALL_EXE`` / ``-X juliacall-exe`` (juliacall's override, set
   together with ``PYTHON_JULIACALL_PROJECT``) or ``PYTHON_JULIACALL_BINDIR``;
2. ``PYTHON_JULIAPKG_EXE`` / ``-X juliapkg-exe`` (juliapkg's override);
3. the executable juliapkg recorded the last time it resolved;
4. a Julia that juliapkg installed into its own prefix;
5. ``julia`` on ``PATH`` (juliaup puts its launcher there).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
from pathlib import Path

from bayeshf.errors import BayeshfError

#: the sentence every entry point raises or prints where Julia is missing
JULIA_NOT_FOUND = (
    "Julia was not found: install it (https://julialang.org/downloads or juliaup) and put `julia` "
    "on PATH, or set PYTHON_JULIAPKG_EXE to the julia executable (PYTHON_JULIACALL_EXE works "
    "together with PYTHON_JULIACALL_PROJECT), or run `bayeshf julia setup --download` where the "
    "internet is reachable so that juliacall downloads Julia and the packages in bayeshf/juliapkg.json."
)
JULIACALL_MISSING = (
    "juliacall is not installed, so the Julia bridge cannot start: install it with "
    "`pip install 'bayeshf[julia]'`."
)
#: the Julia module the bridge includes, relative to the julia/ project
BRIDGE_MODULE = "BayesHFBridge"


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    if module in sys.modules:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _option(juliapkg_name: str, env: str) -> str | None:
    value = sys._xoptions.get(juliapkg_name)
    if isinstance(value, str) and value:
        return value
    value = os.environ.get(env)
    return value or None


def _is_executable(path: str | os.PathLike | None) -> bool:
    return bool(path) and os.path.isfile(path) and os.access(path, os.X_OK)


def _juliapkg_candidates() -> list[str]:
    """The executable juliapkg last resolved and the one it would have installed."""
    if not _installed("juliapkg"):
        return []
    from juliapkg.state import STATE  # cheap: reads environment variables only

    found = []
    meta = STATE.get("meta")
    if meta and os.path.isfile(meta):
        try:
            with open(meta) as handle:
                exe = json.load(handle).get("executable")
            if exe:
                found.append(exe)
        except (OSError, ValueError):
            pass
    install = STATE.get("install")
    if install:
        found.append(os.path.join(install, "bin", "julia.exe" if os.name == "nt" else "julia"))
    return found


def find_julia() -> str | None:
    """Path of a Julia executable the bridge would use, or None; never downloads."""
    exe = _option("juliacall-exe", "PYTHON_JULIACALL_EXE")
    bindir = _option("juliacall-home", "PYTHON_JULIACALL_BINDIR")
    if exe is None and bindir is not None:
        exe = os.path.join(bindir, "julia.exe" if os.name == "nt" else "julia")
    candidates = [exe, _option("juliapkg-exe", "PYTHON_JULIAPKG_EXE"), *_juliapkg_candidates(), shutil.which("julia")]
    for candidate in candidates:
        if _is_executable(candidate):
            return str(candidate)
    return None


def available() -> tuple[bool, str]:
    """``(True, path of julia)`` where the bridge can run, else ``(False, one-sentence reason)``."""
    if not _installed("juliacall"):
        return False, JULIACALL_MISSING
    exe = find_julia()
    if exe is None:
        return False, JULIA_NOT_FOUND
    return True, exe


def require_julia() -> str:
    """The Julia executable, or :class:`BayeshfError` with the sentence saying how to get one."""
    ok, reason = available()
    if not ok:
        raise BayeshfError(reason)
    return reason


def julia_project_dir() -> Path:
    """The Julia project holding ``src/BayesHFBridge.jl``: bayeshf/julia_project (in the wheel too).

    ``BAYESHF_JULIA_PROJECT`` overrides it (a development copy elsewhere).
    """
    override = os.environ.get("BAYESHF_JULIA_PROJECT")
    candidate = Path(override) if override else Path(__file__).resolve().parents[1] / "julia_project"
    if (candidate / "src" / f"{BRIDGE_MODULE}.jl").is_file():
        return candidate
    where = "BAYESHF_JULIA_PROJECT" if override else "the installed bayeshf package"
    raise BayeshfError(
        f"the Julia half of the bridge (src/{BRIDGE_MODULE}.jl) is missing from {candidate} ({where}); "
        "reinstall bayeshf or set BAYESHF_JULIA_PROJECT to the bayeshf/julia_project directory of a checkout."
    )


def juliapkg_file() -> Path:
    """bayeshf's juliapkg.json (the Julia packages juliacall installs for the bridge)."""
    return Path(__file__).resolve().parents[1] / "juliapkg.json"


_BRIDGE = None


def packages_ready() -> bool:
    """True when juliacall can start without installing anything (juliapkg resolved before, nothing changed).

    Uses ``juliapkg.resolve(dry_run=True)``, which never installs; with
    ``PYTHON_JULIACALL_EXE`` and ``PYTHON_JULIACALL_PROJECT`` set, juliacall
    bypasses juliapkg and the user's project is trusted.
    """
    if _option("juliacall-exe", "PYTHON_JULIACALL_EXE") and _option("juliacall-project", "PYTHON_JULIACALL_PROJECT"):
        return True
    try:
        import juliapkg

        return bool(juliapkg.resolve(dry_run=True))
    except Exception:  # no juliapkg, unreadable state, lock trouble: not ready
        return False


def load_bridge():
    """Start Julia through juliacall (once) and return the ``BayesHFBridge`` module.

    Raises :class:`BayeshfError` before importing juliacall where Julia is missing.
    """
    global _BRIDGE
    if _BRIDGE is not None:
        return _BRIDGE
    exe = require_julia()
    source = julia_project_dir() / "src" / f"{BRIDGE_MODULE}.jl"
    if not packages_ready():
        raise BayeshfError(
            f"Julia was found ({exe}) but the bridge's Julia packages are not installed yet: run "
            "`bayeshf julia setup` once (it needs the internet) and try again."
        )
    try:
        from juliacall import Main as jl  # noqa: PLC0415 - lazy on purpose: importing starts Julia

        jl.seval(f'isdefined(Main, :{BRIDGE_MODULE}) || include(raw"{source}")')
        _BRIDGE = jl.seval(f"Main.{BRIDGE_MODULE}")
    except Exception as error:  # juliacall/juliapkg raise plain Exceptions
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if _LIBSTDCXX.search(str(error)):
            raise BayeshfError(LIBSTDCXX_CLASH.format(first=first)) from error
        raise BayeshfError(
            f"Julia was found but the bridge could not start ({first}); run `bayeshf julia setup` "
            "to install the Julia packages in bayeshf/juliapkg.json."
        ) from error
    return _BRIDGE


#: what a C++ runtime older than Julia's, loaded first (by jaxlib, at ``import bayeshf``), looks like
_LIBSTDCXX = re.compile(r"GLIBCXX_|CXXABI_|libstdc\+\+")
LIBSTDCXX_CLASH = (
    "Julia could not load its libraries because this Python process had already loaded an older C++ "
    "runtime ({first}): `import bayeshf` loads jaxlib, and with it the system's libstdc++, before "
    "juliacall starts Julia; start Python with juliacall imported first (`python -c \"import juliacall, sys; "
    "from bayeshf.cli import main; sys.exit(main(sys.argv[1:]))\" sample ...` for the command line) or set LD_PRELOAD to the libstdc++.so.6 in Julia's lib/julia directory."
)
