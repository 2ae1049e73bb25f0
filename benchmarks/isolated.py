"""A log-density implementation timed in a process of its own, with JAX's defaults.

The benchmark process calls :func:`bayeshf.runtime.configure` (as the
``bayeshf`` command does), which switches JAX's CPU client to synchronous
dispatch for the whole process, so a JAX peer timed next to bayeshf
runs faster per call than it does for its own users (pyhf's jax backend on
sbottom RegionA: about 105 us per value + gradient call instead of about
140 us). The ``*-alone`` runners measure the peer as its users run it: a child
process (``python -m benchmarks.isolated``) that imports bayeshf without
calling ``configure`` (and gets ``BAYESHF_CPU_ASYNC=1``,
``BAYESHF_CPU_DEVICES=1`` and none of the variables that would configure JAX
otherwise, in case something does), i.e. with JAX's default
asynchronous dispatch and one CPU device, builds the implementation and runs
the timing loops when the benchmark process asks: one JSON request per line on
its stdin, one JSON answer per line on a pipe of its own (nothing a library
prints can get in the way). The parent waits while the child times, so the
round robin of :func:`benchmarks.harness.time_interleaved` still alternates
the implementations under the same machine load.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import weakref
from typing import Any, Callable

import numpy as np

from benchmarks.cases import REPO
from benchmarks.logdensity import METRICS
from benchmarks.peers import PeerFailed, Prepared, Unavailable

#: environment of the child: JAX's defaults (asynchronous CPU dispatch, one CPU device)
CHILD_ENV = {"BAYESHF_CPU_ASYNC": "1", "BAYESHF_CPU_DEVICES": "1"}
#: ... and none of the variables that would configure JAX's CPU client otherwise
CHILD_ENV_DROPPED = ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES", "JAX_CPU_ENABLE_ASYNC_DISPATCH")

#: seconds to wait for one answer (building a workspace and compiling it included) before giving up
ANSWER_TIMEOUT = 600.0


class ChildFailed(PeerFailed):
    """The child process failed or stopped answering; the message says how."""


class RemoteTimer:
    """One metric of an implementation living in a child process; times itself there.

    :func:`benchmarks.harness.calibrate` and ``timing_loop`` hand objects
    with ``calibrate`` and ``timing_loop`` methods their work instead of
    calling them in a loop (a call across processes costs far more than the
    microseconds being measured).
    """

    def __init__(self, child: "Child", metric: str) -> None:
        self.child, self.metric = child, metric

    def __call__(self) -> Any:
        return self.child.request(op="call", metric=self.metric)

    def calibrate(self, min_time: float) -> int:
        return int(self.child.request(op="calibrate", metric=self.metric, min_time=min_time)["number"])

    def timing_loop(self, number: int) -> float:
        return float(self.child.request(op="loop", metric=self.metric, number=int(number))["seconds"])


class Child:
    """The child process and its request/answer protocol."""

    def __init__(self, name: str, timeout: float = ANSWER_TIMEOUT) -> None:
        self.name = name
        env = {k: v for k, v in os.environ.items() if k not in CHILD_ENV_DROPPED}
        env.update(CHILD_ENV)
        read_fd, write_fd = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.isolated", str(write_fd)], stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL, env=env, text=True, bufsize=1, pass_fds=(write_fd,), cwd=REPO)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self.answers = os.fdopen(read_fd, "r")
        self.timeout = timeout
        self._finalizer = weakref.finalize(self, _stop, self.process, self.answers)

    def _readline(self) -> str:
        with selectors.DefaultSelector() as selector:
            selector.register(self.answers, selectors.EVENT_READ)
            if not selector.select(self.timeout):
                _stop(self.process, self.answers)
                raise ChildFailed(f"the benchmark child process gave no answer within {self.timeout:.0f} s "
                                  "and was stopped", self.name)
        return self.answers.readline()

    def request(self, **message: Any) -> dict[str, Any]:
        if self.process.poll() is not None:
            raise ChildFailed(f"the benchmark child process exited with code {self.process.returncode}", self.name)
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except OSError as error:
            raise ChildFailed(f"the benchmark child process does not take requests ({error})", self.name) from error
        line = self._readline()
        if not line:
            raise ChildFailed(f"the benchmark child process exited with code {self.process.wait()}", self.name)
        try:
            answer = json.loads(line)
        except json.JSONDecodeError as error:
            raise ChildFailed(f"the benchmark child process answered {line[:200]!r}", self.name) from error
        if "unavailable" in answer:
            raise Unavailable(answer["unavailable"])
        if "error" in answer:
            raise ChildFailed(answer["error"], self.name)
        return answer

    def close(self) -> None:
        self._finalizer()


def _stop(process: subprocess.Popen, answers: Any) -> None:
    """End the child: end of input is its signal to quit; killed if it does not within 10 s."""
    try:
        if process.poll() is None:
            try:
                process.stdin.close()
                process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                process.kill()
                process.wait()
    finally:
        for stream in (process.stdin, answers):
            try:
                stream.close()
            except OSError:
                pass


def alone(implementation: str) -> Callable[[dict[str, Any], list[str], np.ndarray], Prepared]:
    """A prepare function running ``implementation`` (a LOGDENSITY_IMPLEMENTATIONS name) in a child process."""
    if implementation.endswith("-alone"):
        raise ValueError(f"{implementation!r} already runs in a process of its own")

    def prepare(spec: dict[str, Any], names: list[str], point: np.ndarray) -> Prepared:
        child = Child(f"{implementation}-alone")
        try:
            answer = child.request(op="prepare", implementation=implementation, spec=spec, names=list(names),
                                   point=[float(v) for v in point])
        except BaseException:
            child.close()
            raise
        prepared = Prepared(f"{implementation}-alone", answer["par_names"], np.asarray(answer["point"]),
                            setup=answer["setup"], logpdf=answer["logpdf"], notes=answer["notes"],
                            evaluations=answer["evaluations"], close=child.close)
        for metric in answer["metrics"]:
            setattr(prepared, metric, RemoteTimer(child, metric))
        return prepared

    return prepare


def serve(stdin: Any, answers: Any) -> None:
    """The child's loop: answer one JSON request per line until ``quit`` or the end of input."""
    import jax

    from benchmarks.harness import calibrate, timing_loop
    from benchmarks.peers import LOGDENSITY_IMPLEMENTATIONS

    prepared: Prepared | None = None
    for line in stdin:
        message = json.loads(line)
        op = message.get("op")
        try:
            if op == "quit":
                break
            if op == "prepare":
                if jax.config.values.get("jax_cpu_enable_async_dispatch") is not True or len(jax.local_devices()) != 1:
                    raise RuntimeError("the child did not get JAX's default CPU client "
                                       "(asynchronous dispatch, one device)")
                prepare = LOGDENSITY_IMPLEMENTATIONS[message["implementation"]]
                prepared = prepare(message["spec"], message["names"], np.asarray(message["point"]))
                metrics = [m for m in METRICS if getattr(prepared, m) is not None]
                answer = {"par_names": list(prepared.par_names), "point": [float(v) for v in prepared.point],
                          "setup": {k: float(v) for k, v in prepared.setup.items()}, "notes": dict(prepared.notes),
                          "logpdf": float(prepared.logpdf), "evaluations": int(prepared.evaluations),
                          "metrics": metrics}
            elif prepared is None:
                raise RuntimeError(f"request {op!r} before prepare")
            elif op == "call":
                getattr(prepared, message["metric"])()
                answer = {}
            elif op == "calibrate":
                answer = {"number": calibrate(getattr(prepared, message["metric"]), float(message["min_time"]))}
            elif op == "loop":
                answer = {"seconds": timing_loop(getattr(prepared, message["metric"]), int(message["number"]))}
            else:
                raise RuntimeError(f"unknown request {op!r}")
        except Unavailable as reason:
            answer = {"unavailable": str(reason)}
        except Exception as error:  # reported to the parent, which records a skip
            answer = {"error": f"{type(error).__name__}: {error}"}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


if __name__ == "__main__":
    with os.fdopen(int(sys.argv[1]), "w") as _answers:
        serve(sys.stdin, _answers)
