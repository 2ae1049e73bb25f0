"""bayeshf.stored: compiled programs kept on disk are loaded, not traced again, and give the same results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import data_path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys
import numpy as np
import bayeshf
from bayeshf import stored
stored.enable(sys.argv[1])
import jax.numpy as jnp

traced = []

def f(power, x, y):
    traced.append(power)  # runs only while JAX traces f
    return {"value": jnp.sum(x ** power) + y, "twice": 2 * x}

program = stored.StoredJit(f, static_argnums=0, name="tests.f")
x = np.arange(3.0)
out = [program(2, x, 1.0), program(2, x + 1, 0.5), program(3, x, 1.0)]
print(json.dumps({"traced": traced, "values": [float(o["value"]) for o in out],
                  "twice": np.asarray(out[0]["twice"]).tolist()}))
"""


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**base, **(env or {})})


def _script(store: Path) -> dict:
    done = _run("-c", SCRIPT, str(store))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_stored_program_is_loaded_without_tracing_and_gives_the_same_values(tmp_path):
    store = tmp_path / "programs"
    first = _script(store)
    assert first["traced"] == [2, 3]  # one trace per static argument; new data reuse it
    assert first["values"] == [6.0, 14.5, 10.0] and first["twice"] == [0.0, 2.0, 4.0]
    entries = sorted(store.glob("*.jaxexe"))
    assert len(entries) == 2
    second = _script(store)
    assert second["traced"] == []  # loaded: f never ran
    assert second["values"] == first["values"] and second["twice"] == first["twice"]
    # a damaged entry is not fatal: the program is traced again and the entry replaced
    entries[0].write_bytes(b"not an executable")
    third = _script(store)
    assert len(third["traced"]) == 1 and third["values"] == first["values"]
    assert _script(store)["traced"] == []


def test_the_command_line_reruns_from_stored_programs_with_the_same_results(tmp_path):
    """Second `bayeshf fit` and `bayeshf sample` runs trace none of bayeshf's programs and give the same numbers."""
    workspace = str(data_path("thesis/2_bin_corr.json"))
    # two CPU devices: the chain programs are sharded over them, the others run on one
    env = {"BAYESHF_JAX_CACHE": str(tmp_path / "cache"), "JAX_LOG_COMPILES": "1", "BAYESHF_CPU_DEVICES": "2"}
    runs = []
    for _ in range(2):
        fit = _run("-m", "bayeshf", "fit", workspace, "--json", env=env)
        assert fit.returncode == 0, fit.stderr[-3000:]
        out = tmp_path / f"sample{len(runs)}"
        sample = _run("-m", "bayeshf", "sample", workspace, "--draws", "200", "--warmup", "200", "--target-ess", "0",
                      "--no-plots", "-o", str(out), "--quiet", env=env)
        assert sample.returncode == 0, sample.stderr[-3000:]
        runs.append((json.loads(fit.stdout), fit.stderr + sample.stderr,
                     json.loads((out / "summary.json").read_text())))
    assert any(p.name.endswith(".jaxexe") for p in (tmp_path / "cache" / "bayeshf-programs").iterdir())
    (fit1, log1, summary1), (fit2, log2, summary2) = runs
    assert fit1["twice_nll"] == fit2["twice_nll"] and fit1["bestfit"] == fit2["bestfit"]
    assert summary1["parameters"] == summary2["parameters"]
    # and the same as without any cache (jax.jit's own programs)
    plain = _run("-m", "bayeshf", "sample", workspace, "--draws", "200", "--warmup", "200", "--target-ess", "0",
                 "--no-plots", "-o", str(tmp_path / "plain"), "--quiet",
                 env={"BAYESHF_JAX_CACHE": "off", "BAYESHF_CPU_DEVICES": "2"})
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert json.loads((tmp_path / "plain" / "summary.json").read_text())["parameters"] == summary2["parameters"]
    for name in ("_hess_z", "_objective_z", "_z_value_and_grad", "run_chunk"):
        assert f"tracing {name} " in log1
        assert f"tracing {name} " not in log2, name
