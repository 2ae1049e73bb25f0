"""Run ``bayeshf`` commands in this process (the bulk of the corpus) or in a subprocess, and judge the outcome."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
from pathlib import Path


class Outcome:
    def __init__(self, code, stdout, stderr):
        self.code, self.stdout, self.stderr = code, stdout, stderr

    def __repr__(self):
        return f"Outcome(code={self.code}, stderr={self.stderr[-600:]!r})"


class _Timeout(BaseException):
    pass


def run_in_process(argv, stdin: bytes | None = None, timeout: float = 30.0, env=None) -> Outcome:
    """``bayeshf.cli.main(argv)`` with captured output; a Python-level timeout through SIGALRM."""
    from bayeshf.cli import main

    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    old_env = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))

    def alarm(signum, frame):
        raise _Timeout()

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 2
            except _Timeout:
                code = "timeout"
            except BaseException:  # the thing the corpus hunts: a traceback
                import traceback

                traceback.print_exc()
                code = "traceback"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        sys.stdin = old_stdin
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return Outcome(code, out.getvalue(), err.getvalue())


def run_subprocess(argv, stdin: bytes | None = None, timeout: float = 60.0, env=None) -> Outcome:
    full_env = dict(os.environ, **(env or {}))
    try:
        done = subprocess.run([sys.executable, "-m", "bayeshf", *argv], input=stdin if stdin is not None else b"",
                              capture_output=True, timeout=timeout, env=full_env)
    except subprocess.TimeoutExpired as expired:
        return Outcome("timeout", (expired.stdout or b"").decode(errors="replace"),
                       (expired.stderr or b"").decode(errors="replace"))
    return Outcome(done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"))


def problems(case, argv, outcome: Outcome) -> list[str]:
    """What is wrong with ``outcome`` for ``case`` (empty: all is well)."""
    found = []
    stderr = outcome.stderr
    if "Traceback" in stderr or outcome.code == "traceback":
        found.append("traceback")
    if outcome.code == "timeout":
        found.append("timeout")
    lines, in_usage = [], False
    for line in stderr.splitlines():
        in_usage = line.startswith("usage:") or (in_usage and line.startswith(" "))  # argparse's usage block
        if line.strip() and not in_usage and "warning:" not in line and "\r" not in line:  # progress bars
            lines.append(line)
    errors = [line for line in lines if "error:" in line]
    if case.expect == "error" and len(lines) > len(errors):
        found.append(f"{len(lines) - len(errors)} more lines than the error")
    if case.expect == "error":
        if outcome.code != 2:
            found.append(f"exit {outcome.code}, not 2")
        if len(errors) != 1:
            found.append(f"{len(errors)} error lines")
        elif case.names and case.names not in errors[0]:
            found.append(f"the message does not name {case.names!r}")
    else:
        if outcome.code not in (0, 1, 2):
            found.append(f"exit {outcome.code}")
        if outcome.code == 2 and len(errors) != 1:
            found.append(f"{len(errors)} error lines")
    return found


def leftovers(directory: Path, before: set) -> list[str]:
    """Files that appeared under ``directory`` (temporaries and half-written outputs)."""
    now = {str(p) for p in Path(directory).rglob("*")}
    return sorted(p for p in now - before if ".tmp" in Path(p).name or Path(p).name.startswith("."))
