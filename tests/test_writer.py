"""The writer process of ``bayeshf sample`` (bayeshf.cli._writer): same outputs as writing in-process, and a
writer that is gone leaves the command to write them itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import arviz as az
import numpy as np

from bayeshf.cli import main
from tests.conftest import data_path

ROOT = Path(__file__).resolve().parents[1]
WORKSPACE = str(data_path("thesis/2_bin_uncorr.json"))
ARGS = ["sample", WORKSPACE, "--chains", "2", "--warmup", "100", "--draws", "60", "--seed", "5", "--quiet",
        "--target-ess", "300", "--max-time", "60"]


def _env() -> dict:
    return {**{k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")},
            "BAYESHF_JAX_CACHE": "off"}


def test_the_writer_process_writes_what_the_command_writes_in_process(tmp_path):
    forked, inline = tmp_path / "forked", tmp_path / "inline"
    done = subprocess.run([sys.executable, "-m", "bayeshf", *ARGS, "--out", str(forked)], capture_output=True,
                          text=True, cwd=ROOT, env=_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "parameter" in done.stdout and "mu: 95% credible upper limit" in done.stdout  # the writer's table
    assert main([*ARGS, "--out", str(inline)]) == 0
    for name in ("posterior.nc", "summary.json", "corner.png", "ppc.png"):
        assert (forked / name).stat().st_size > 0, name
    a, b = (json.loads((d / "summary.json").read_text()) for d in (forked, inline))
    assert a["parameters"] == b["parameters"] and a["draws"] == b["draws"] > 60  # --target-ess drew more in both
    x, y = (az.from_netcdf(d / "posterior.nc") for d in (forked, inline))
    assert set(x.groups()) == set(y.groups())
    for group in x.groups():
        for name, values in getattr(x, group).data_vars.items():
            np.testing.assert_array_equal(values.values, getattr(y, group)[name].values)
    np.testing.assert_array_equal(x.posterior.attrs["map"], y.posterior.attrs["map"])


GONE = r"""
import os, signal, sys, numpy as np
from bayeshf.cli import _writer
writer = _writer.fork()
os.kill(writer.pid, signal.SIGKILL)
os.waitpid(writer.pid, 0)
theta = np.random.default_rng(0).normal(size=(2, 50, 3))
bulk, tail, rhat = writer.convergence_table(theta)  # computed here instead
assert bulk.shape == (3,) and np.all(bulk > 0) and np.all(np.isfinite(rhat))
assert writer.write({}, {}, sys.argv[1], corner_vars=None, plots=False) is None and not writer.alive
writer.close()
print("ok")
"""


def test_a_writer_that_is_gone_leaves_the_work_to_the_command(tmp_path):
    done = subprocess.run([sys.executable, "-c", GONE, str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                          env=_env(), timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_a_reader_that_goes_away_stops_no_output(tmp_path):
    """`bayeshf sample ... | head -1`: the table's reader leaves; every file is still written, status 0."""
    process = subprocess.Popen([sys.executable, "-m", "bayeshf", *ARGS, "--target-ess", "0", "--out", str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=_env())
    process.stdout.close()  # nobody reads the table
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr.decode(errors="replace")[-3000:]
    assert "Traceback" not in stderr.decode(errors="replace")
    for name in ("posterior.nc", "summary.json", "corner.png", "ppc.png"):
        assert (tmp_path / name).stat().st_size > 0, name
