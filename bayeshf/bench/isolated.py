"""A log-density implementation timed in a process of its own, with JAX's defaults.

``import bayeshf`` switches JAX's CPU client to synchronous dispatch for the
whole process (:mod:`bayeshf.devices`), so a JAX peer timed next to bayeshf
runs faster than it does for its own users (pyhf's jax backend on sbottom
RegionA: about 100 us per value + gradient call instead of about 150 us).
The ``*-alone`` runners measure the peer as its users run it: a child process
(``python -m bayeshf.bench.isolated``) started with ``BAYESHF_CPU_ASYNC=1`` and
``BAYESHF_CPU_DEVICES=1``, i.e. with JAX's default asynchronous dispatch and
one CPU device, builds the implementation and runs the timing loops when the
benchmark process asks (one JSON line per request on its stdin, one answer per
line on its stdout). The parent waits while the child times, so the round
robin of :func:`bayeshf.bench.harness.time_interleaved` still alternates the
implementations under the same machine load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import weakref
from typing import Any, Callable

import numpy as np

from bayeshf.bench.peers import Prepared, Unavailable

#: the thunks of a Prepared that a child can time
METRICS = ("value", "value_and_grad", "value_and_grad_host", "hvp", "value_and_grad_in_jit")

#: environment of the child: JAX's defaults (asynchronous CPU dispatch, one CPU device)
CHILD_ENV = {"BAYESHF_CPU_ASYNC": "1", "BAYESHF_CPU_DEVICES": "1"}


class RemoteTimer:
    """One metric of an implementation living in a child process; times itself there.

    :func:`bayeshf.bench.harness.calibrate` and ``timing_loop`` hand objects
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

    def __init__(self) -> None:
        env = {**os.environ, **CHILD_ENV}
        self.process = subprocess.Popen([sys.executable, "-m", "bayeshf.bench.isolated"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=env, text=True, bufsize=1)
        self._finalizer = weakref.finalize(self, _stop, self.process)

    def request(self, **message: Any) -> dict[str, Any]:
        if self.process.poll() is not None:
            raise RuntimeError(f"the benchmark child process exited with code {self.process.returncode}")
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the benchmark child process exited with code {self.process.wait()}")
        answer = json.loads(line)
        if "unavailable" in answer:
            raise Unavailable(answer["unavailable"])
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def close(self) -> None:
        self._finalizer()


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            process.stdin.write(json.dumps({"op": "quit"}) + "\n")
            process.stdin.flush()
            process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()


def alone(implementation: str) -> Callable[[dict[str, Any], list[str], np.ndarray], Prepared]:
    """A prepare function running ``implementation`` (a LOGDENSITY_IMPLEMENTATIONS name) in a child process."""

    def prepare(spec: dict[str, Any], names: list[str], point: np.ndarray) -> Prepared:
        child = Child()
        try:
            answer = child.request(op="prepare", implementation=implementation, spec=spec, names=list(names),
                                   point=[float(v) for v in point])
        except BaseException:
            child.close()
            raise
        prepared = Prepared(f"{implementation}-alone", answer["par_names"], np.asarray(answer["point"]),
                            setup=answer["setup"], logpdf=answer["logpdf"], notes=answer["notes"],
                            evaluations=answer["evaluations"])
        for metric in answer["metrics"]:
            setattr(prepared, metric, RemoteTimer(child, metric))
        prepared.close = child.close
        return prepared

    return prepare


def serve(stdin: Any, stdout: Any) -> None:
    """The child's loop: answer one JSON request per line until ``quit`` or end of input."""
    import jax

    from bayeshf.bench.harness import calibrate, timing_loop
    from bayeshf.bench.peers import LOGDENSITY_IMPLEMENTATIONS

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
        stdout.write(json.dumps(answer) + "\n")
        stdout.flush()


if __name__ == "__main__":
    # answers go to the real stdout; anything the libraries print goes to stderr
    _answers = sys.stdout
    sys.stdout = sys.stderr
    serve(sys.stdin, _answers)
