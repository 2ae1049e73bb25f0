"""The writer of ``bayeshf sample``: a process forked before JAX's import that imports ArviZ, xarray,
matplotlib and corner on the second core while the command samples, answers the ESS/R-hat questions of
``--target-ess`` and writes posterior.nc, summary.json and the plots.

Those imports cost about as much CPU as the sampling of a small model (docs/architecture.md, "Runtime");
run on a thread they share the interpreter lock with the sampler. Messages are pickled over two pipes.
The writer ignores SIGINT and SIGTERM: the command keeps the draws made before a Ctrl-C and sends them. It
ends when the command closes its pipe, whatever the command's fate; if the writer is gone, the command
writes the outputs itself.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
from pathlib import Path

from bayeshf.errors import BayeshfError


class WriterError(BayeshfError):
    """The writer could not write an output (the message says which and why)."""


class WriterStopped(Exception):
    """The writer process is gone (killed with the command's process group): the command does its work itself."""


class Writer:
    """The command's end of the writer process (:func:`fork`)."""

    def __init__(self, pid: int, to_writer, from_writer) -> None:
        self.pid = pid
        self.alive = True
        self._to = to_writer
        self._from = from_writer

    def _ask(self, operation: str, payload):
        try:
            pickle.dump((operation, payload), self._to, protocol=pickle.HIGHEST_PROTOCOL)
            self._to.flush()
            status, answer = pickle.load(self._from)
        except (EOFError, OSError, pickle.UnpicklingError):
            self.alive = False
            raise WriterStopped from None
        if status != "ok":
            raise WriterError(answer)
        return answer

    def convergence_table(self, theta):
        """bayeshf.diagnostics.convergence_table, computed in the writer (it has ArviZ imported already)."""
        if self.alive:
            try:
                return self._ask("convergence", theta)
            except WriterStopped:
                pass
        from bayeshf.diagnostics import convergence_table

        return convergence_table(theta)

    def write(self, groups, attrs, out: Path, *, corner_vars, plots: bool, map_marker=None) -> list[str] | None:
        """Assemble the InferenceData and write the outputs (write_outputs prints as usual); the summary's
        warnings, or None when the writer is gone (the command then writes them itself).

        ``map_marker``: the posterior group's ``map`` attribute (the corner plot's MAP), or None."""
        if not self.alive:
            return None
        try:
            return self._ask("write", (groups, attrs, str(out), corner_vars, plots, map_marker))
        except WriterStopped:
            return None

    def close(self) -> None:
        for stream in (self._to, self._from):
            try:
                stream.close()
            except OSError:
                pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def run_forked(work) -> int | None:
    """Fork a process that runs ``work()`` and ends with its exit code (1 if it raised); its pid, or None
    where ``os.fork`` is missing. Nothing buffered before the fork is printed twice."""
    if not hasattr(os, "fork"):  # pragma: no cover - not POSIX
        return None
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1  # pragma: no cover - runs in the child (tests/test_writer.py drives it)
    try:  # pragma: no cover
        code = work()
    finally:  # pragma: no cover
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def fork() -> Writer | None:
    """Start the writer (None where ``os.fork`` is missing: the command then writes the outputs itself)."""
    down_read, down_write = os.pipe()
    up_read, up_write = os.pipe()

    def work() -> int:
        os.close(down_write)
        os.close(up_read)
        for number in (signal.SIGINT, signal.SIGTERM):  # the command decides, and sends what it kept
            signal.signal(number, signal.SIG_IGN)
        return _serve(os.fdopen(down_read, "rb"), os.fdopen(up_write, "wb"))

    pid = run_forked(work)
    if pid is None:  # pragma: no cover - not POSIX
        for descriptor in (down_read, down_write, up_read, up_write):
            os.close(descriptor)
        return None
    os.close(down_read)
    os.close(up_write)
    return Writer(pid, os.fdopen(down_write, "wb"), os.fdopen(up_read, "rb"))


def _serve(requests, replies) -> int:
    import matplotlib

    matplotlib.use("Agg", force=False)  # files only
    import arviz  # noqa: F401  (the point of this process: imported while the command samples)
    import corner  # noqa: F401
    import h5netcdf  # noqa: F401
    import matplotlib.pyplot as plt
    import numpy as np

    # what the first dataset and the first figure load lazily (xarray's array-type probes, fonts), also now
    arviz.convert_to_dataset({"x": np.zeros((1, 4))})
    plt.close(plt.figure())

    from bayeshf.assemble import assemble
    from bayeshf.cli.sample import write_outputs
    from bayeshf.diagnostics import convergence_table

    while True:
        try:
            operation, payload = pickle.load(requests)
        except (EOFError, OSError):  # the command ended (or failed) without asking for more
            return 0
        try:
            if operation == "convergence":
                answer = convergence_table(payload)
            else:
                groups, attrs, out, corner_vars, plots, marker = payload
                idata = assemble(groups, attrs)
                if marker is not None:
                    idata.posterior.attrs["map"] = marker
                summary = write_outputs(idata, Path(out), corner_vars=corner_vars, plots=plots, fork_plots=True)
                answer = list(summary.warnings)
            reply = ("ok", answer)
        except BrokenPipeError:  # the reader of the table went away (``| head``): as the command itself, no error
            reply = ("ok", [])
        except (BayeshfError, OSError) as error:
            reply = ("error", str(error))
        except Exception as error:  # one sentence to the command, which exits with it
            reply = ("error", f"writing the outputs failed: {type(error).__name__}: {error}")
        pickle.dump(reply, replies, protocol=pickle.HIGHEST_PROTOCOL)
        replies.flush()
        if operation == "write":
            return 0
