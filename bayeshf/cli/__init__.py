# PYTHON_ARGCOMPLETE_OK  (marks the entry point for argcomplete's global completion)
"""The ``bayeshf`` command line: one module per command, each a thin wrapper.

Every command module defines ``register(subparsers)``, which adds its parser
and sets ``func`` (a callable taking the parsed arguments and returning an exit
code). Errors of ours (:class:`bayeshf.BayeshfError`) are printed as one
sentence with a nonzero exit status and no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import os
import signal
import sys
import threading
import warnings

from bayeshf.errors import BayeshfError, interrupt_behind

#: command modules, in the order ``bayeshf --help`` lists them
COMMANDS = [
    "inspect",
    "julia",
    "sample",
    "evidence",
    "priors",
    "plot",
    "datamc",
    "bench",
    "fit",
    "cls",
    "limit",
    "scan",
    "ranking",
    "significance",
    "patchset",
    "contour",
]


@functools.lru_cache(maxsize=1)  # one per process: main() called again (tests) reuses it
def build_parser() -> argparse.ArgumentParser:
    from bayeshf import __version__

    parser = argparse.ArgumentParser(
        prog="bayeshf",
        description="Bayesian and frequentist inference on HistFactory (pyhf JSON) workspaces.",
    )
    parser.add_argument("--version", action="version", version=f"bayeshf {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"bayeshf.cli.{name}").register(subparsers)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM as an exception: finally blocks run and the sampler keeps its draws, as for Ctrl-C."""


#: signals received during this run; the first stops the work, later ones wait for the file being written
_RECEIVED: list[int] = []


def _on_signal(signum, frame):
    from bayeshf import io

    _RECEIVED.append(signum)
    exception = KeyboardInterrupt() if signum == signal.SIGINT else Terminated()
    if len(_RECEIVED) > 1 or io.saving():
        # the work has stopped already (or a file is half written): keep what was finished
        print("bayeshf: interrupted; finishing the file being written first", file=sys.stderr)
        if len(_RECEIVED) == 2 or io.saving():
            io.defer(exception)
        return
    raise exception


@contextlib.contextmanager
def _signals_handled():
    """SIGINT and SIGTERM raise (SIGTERM as :class:`Terminated`) in the main thread; restored afterwards."""
    from bayeshf import io

    _RECEIVED.clear()
    io._DEFERRED.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _interrupted(command: str) -> int:
    """128 + the first signal's number (130 for SIGINT, 143 for SIGTERM), as shells report it."""
    number = _RECEIVED[0] if _RECEIVED else signal.SIGINT
    print(f"bayeshf {command}: interrupted by {signal.Signals(number).name}; what was finished is kept",
          file=sys.stderr)
    return 128 + int(number)


def _arviz_cache_writable_or_redirected() -> None:
    """ArviZ writes a date stamp to the user's cache directory at import: a read-only HOME made every import fail.

    If that directory cannot be written, ArviZ's stamp goes to the temporary directory instead.
    """
    if "arviz" in sys.modules:
        return
    try:
        import platformdirs
    except ImportError:  # pragma: no cover - a dependency of arviz
        return
    directory = platformdirs.user_cache_dir("arviz", "arviz")
    try:
        os.makedirs(directory, exist_ok=True)
        if os.access(directory, os.W_OK):
            return
    except OSError:
        pass
    import tempfile

    original = platformdirs.user_cache_dir
    fallback = os.path.join(tempfile.gettempdir(), f"bayeshf-arviz-{os.getuid()}")

    def user_cache_dir(appname=None, *args, **kwargs):
        return fallback if appname == "arviz" else original(appname, *args, **kwargs)

    platformdirs.user_cache_dir = user_cache_dir


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"bayeshf: warning: {message}", file=sys.stderr)


#: set by entry(): this process runs one command and ends
_OWN_PROCESS = False


def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = _show_warning
    # other libraries' deprecation notices are not the user's business
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # a shell asks for completions (pip install 'bayeshf[completion]')
        try:
            import argcomplete

            argcomplete.autocomplete(parser)
        except ImportError:
            pass
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse's own errors (exit 2, usage and one line) and --help/--version (0)
        return exit_.code if isinstance(exit_.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from bayeshf.runtime import configure

    _arviz_cache_writable_or_redirected()

    # the benchmarks time cold compilation themselves: no persistent cache under them
    if getattr(args, "before_jax", None) is not None:  # e.g. sample's writer process, forked before JAX runs
        args.before_jax(args)
    # whole programs are stored only when the process is the command's own (entry): code that called main()
    # in its own process may have patched what a stored program was traced with
    configure(compilation_cache=args.command != "bench", stored_programs=_OWN_PROCESS and args.command != "bench")
    try:
        with _signals_handled():
            code = int(args.func(args) or 0)
        # a command that caught the interrupt and saved what it had still ends as interrupted
        return _interrupted(args.command) if _RECEIVED else code
    except BayeshfError as error:
        # a failed fit (exit 1, not bad input) still gives the JSON reader a document saying so
        code = int(getattr(error, "exit_code", 2))
        if code != 2 and hasattr(error, "to_dict") and (getattr(args, "json", False)
                                                        or getattr(args, "output_file", None)):
            from bayeshf.cli.common import print_json

            print_json(error.to_dict(), args)
        print(f"bayeshf {args.command}: error: {error}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        return _interrupted(args.command)
    except BrokenPipeError:
        return 0
    except Exception as error:
        if interrupt_behind(error) is None:
            raise
        return _interrupted(args.command)


def entry(argv: list[str] | None = None) -> None:
    """The ``bayeshf`` command: :func:`main`, then exit without tearing the interpreter down.

    The results are written and closed by then; the teardown of JAX's backend and of every module
    object took about half a second per run (docs/architecture.md, "Runtime"). Exit handlers still run.
    """
    global _OWN_PROCESS
    _OWN_PROCESS = True
    code = main(argv)
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach the reader
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
