"""bayeshf.runtime: what import changes (float64 only), what configure() sets, the compilation cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bayeshf
from bayeshf import runtime
from tests.conftest import data_path

ROOT = Path(__file__).resolve().parents[1]


def _python(script: str, *args: str, env: dict | None = None, timeout: float = 300) -> str:
    """Run ``script`` in a fresh interpreter (JAX fixes devices and dispatch when its backend starts)."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("XLA_FLAGS", "BAYESHF_CPU_DEVICES", "BAYESHF_CPU_ASYNC", "JAX_NUM_CPU_DEVICES")}
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=ROOT,
                          env={**base, "BAYESHF_JAX_CACHE": "off", **(env or {})}, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


STATE = ("import jax; from bayeshf import runtime; "
         "print(json.dumps([jax.config.values['jax_enable_x64'], jax.config.values['jax_cpu_enable_async_dispatch'], "
         "len(jax.local_devices(backend='cpu')), runtime.backend_started()]))")


def test_import_sets_float64_only_and_configure_sets_devices_and_dispatch():
    plain = json.loads(_python("import json, bayeshf; " + STATE))
    assert plain == [True, True, 1, True]  # JAX's own dispatch and device count
    configured = json.loads(_python("import json, bayeshf; s = bayeshf.runtime.configure(cpu_devices=2); "
                                    "assert s.cpu_devices == 2 and s.synchronous_dispatch is True; " + STATE))
    assert configured == [True, False, 2, True]
    kept = json.loads(_python("import json, bayeshf; bayeshf.runtime.configure(); " + STATE,
                              env={"BAYESHF_CPU_ASYNC": "1", "BAYESHF_CPU_DEVICES": "1"}))
    assert kept == [True, True, 1, True]


def test_backend_started_and_configure_after_it_changes_nothing():
    script = ("import json, jax, bayeshf; from bayeshf import runtime; before = runtime.backend_started(); "
              "jax.numpy.zeros(1).block_until_ready(); after = runtime.backend_started(); "
              "s = runtime.configure(cpu_devices=2, compilation_cache=False); "
              "print(json.dumps([before, after, s.cpu_devices, s.synchronous_dispatch, "
              "len(jax.local_devices()), jax.config.values['jax_cpu_enable_async_dispatch']]))")
    assert json.loads(_python(script)) == [False, True, 0, None, 1, True]


SPLIT_SCRIPT = """
import sys, numpy as np, jax, bayeshf
bayeshf.runtime.configure(compilation_cache=False)
from bayeshf import sampling
from bayeshf.runtime import chain_devices
assert len(jax.local_devices(backend="cpu")) == 2, jax.local_devices(backend="cpu")
assert len(chain_devices(4)) == 2 and len(chain_devices(3)) == 1
posterior = sampling.posterior_for(bayeshf.load(sys.argv[1]))
for chain_loop in (True, False):
    runs = [sampling.run_chains(posterior, chains=4, warmup=50, draws=30, seed=4, progress=False,
                                split_chains=split, chain_loop=loop).stats
            for split, loop in ((True, chain_loop), (False, chain_loop), (False, not chain_loop))]
    # split vs one device: the same chains up to the rounding of another batch size; looped vs batched: up to
    # rounding too (XLA orders batched arithmetic differently and the leapfrog dynamics amplify it slowly)
    for other, rtol in zip(runs[1:], (1e-7, 1e-6)):
        np.testing.assert_allclose(runs[0].theta, other.theta, rtol=rtol, atol=1e-12)
        np.testing.assert_array_equal(runs[0].n_steps, other.n_steps)
    assert np.unique(runs[0].theta[:, :, 0]).size > 10  # the chains moved (4 chains x 30 draws)
print("ok")
"""


def test_chains_split_over_cpu_devices_give_the_draws_of_one_device():
    """Chains sharded over two CPU devices, looped or batched, follow the same trajectories as on one device."""
    assert _python(SPLIT_SCRIPT, str(data_path("thesis/2_bin_uncorr.json")), env={"BAYESHF_CPU_DEVICES": "2"},
                   timeout=600) == "ok"


@pytest.fixture
def fresh_cache_setting(monkeypatch):
    """Run with no compilation cache directory set in JAX, and restore JAX's setting afterwards."""
    import jax

    saved = {name: jax.config.values[name] for name in
             ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")}
    jax.config.update("jax_compilation_cache_dir", None)
    for name in ("BAYESHF_JAX_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(runtime, "_validation_cache", None)
    yield jax
    for name, value in saved.items():
        jax.config.update(name, value)


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    for name in ("BAYESHF_JAX_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert runtime.cache_directory() == tmp_path / "home" / ".cache" / "bayeshf" / "jax"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert runtime.cache_directory() == tmp_path / "xdg" / "bayeshf" / "jax"
    monkeypatch.setenv("BAYESHF_JAX_CACHE", str(tmp_path / "mine"))
    assert runtime.cache_directory() == tmp_path / "mine"
    monkeypatch.setenv("BAYESHF_JAX_CACHE", "off")
    assert runtime.cache_directory() is None


def test_cache_is_enabled_bounded_and_skipped_with_a_warning_when_not_writable(fresh_cache_setting, tmp_path):
    jax = fresh_cache_setting
    not_a_directory = tmp_path / "home"
    not_a_directory.write_text("a file where HOME should be: unwritable even for root")
    with pytest.warns(RuntimeWarning, match="cannot be written"):
        assert runtime.enable_compilation_cache(not_a_directory / ".cache" / "jax") is None
    assert jax.config.values["jax_compilation_cache_dir"] is None
    assert runtime.enable_compilation_cache(tmp_path / "cache") == tmp_path / "cache"
    assert jax.config.values["jax_compilation_cache_dir"] == str(tmp_path / "cache")
    assert jax.config.values["jax_persistent_cache_min_compile_time_secs"] == 0.0
    # the write test leaves nothing behind but the (empty) directory of validation stamps
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [runtime.VALIDATED_SUBDIRECTORY]


def test_validation_is_skipped_for_contents_that_passed_once(fresh_cache_setting, monkeypatch, tmp_path):
    """With the persistent cache on, a workspace validates once; other contents and failures are not stamped."""
    import copy

    from bayeshf import workspace
    from bayeshf.errors import BayeshfError

    spec = json.loads(data_path("thesis/2_bin_corr.json").read_text())
    runs = []
    real = workspace._workspace_validator()

    class Counting:
        def validate(self, document):
            runs.append(1)
            real.validate(document)

    monkeypatch.setattr(workspace, "_workspace_validator", lambda: Counting())
    workspace.validate(spec, "ws")  # no cache yet: checked, nothing stamped
    assert runtime.validation_cache() is None and len(runs) == 1
    runtime.enable_compilation_cache(tmp_path / "cache")
    stamps = runtime.validation_cache()
    for _ in range(2):
        workspace.validate(spec, "ws")
    assert len(runs) == 2 and len(list(stamps.iterdir())) == 1
    other = copy.deepcopy(spec)
    other["observations"][0]["data"][0] += 1
    workspace.validate(other, "ws")
    assert len(runs) == 3 and len(list(stamps.iterdir())) == 2
    bad = copy.deepcopy(spec)
    bad["observations"][0]["data"][0] = -1.0
    for _ in range(2):  # a failure is checked (and fails) every time
        with pytest.raises(BayeshfError, match="observed count"):
            workspace.validate(bad, "ws")
    assert len(runs) == 5 and len(list(stamps.iterdir())) == 2


def test_prune_cache_deletes_the_oldest_entries_down_to_the_bound(tmp_path):
    for age, name in enumerate(["newest", "middle", "oldest"]):
        path = tmp_path / name
        path.write_bytes(b"x" * 100)
        os.utime(path, (1e9 - age * 1000, 1e9 - age * 1000))
    assert runtime.prune_cache(tmp_path, max_bytes=300) == 0
    assert runtime.prune_cache(tmp_path, max_bytes=150) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["newest"]
    assert runtime.prune_cache(tmp_path / "missing", max_bytes=0) == 0


@pytest.mark.parametrize("cache", [False, True])
def test_sample_honours_its_compilation_cache_argument(fresh_cache_setting, monkeypatch, tmp_path, cache):
    jax = fresh_cache_setting
    monkeypatch.setenv("BAYESHF_JAX_CACHE", str(tmp_path / "cache"))
    model = bayeshf.load(data_path("thesis/2_bin_corr.json"))
    bayeshf.sample(model, chains=1, warmup=20, draws=20, progress=False, compilation_cache=cache, prior_draws=0)
    expected = str(tmp_path / "cache") if cache else None
    assert jax.config.values["jax_compilation_cache_dir"] == expected


def test_cli_configures_the_runtime_and_a_second_run_reads_the_cache(tmp_path):
    """``bayeshf fit`` twice in fresh processes: the second compiles nothing (every program from the cache)."""
    script = ("import sys, jax; from jax._src import monitoring\n"
              "events = []\n"
              "monitoring.register_event_listener(lambda name, **kw: events.append(name))\n"
              "from bayeshf.cli import main\n"
              "code = main(['fit', sys.argv[1], '--json', '--output-file', sys.argv[2]])\n"
              "hits = events.count('/jax/compilation_cache/cache_hits')\n"
              "misses = events.count('/jax/compilation_cache/cache_misses')\n"
              "print(code, jax.config.values['jax_cpu_enable_async_dispatch'], hits, misses)\n")
    env = {"BAYESHF_JAX_CACHE": str(tmp_path / "cache")}
    workspace = str(data_path("thesis/2_bin_corr.json"))
    first = _python(script, workspace, str(tmp_path / "a.json"), env=env).split()
    second = _python(script, workspace, str(tmp_path / "b.json"), env=env).split()
    assert first[:2] == second[:2] == ["0", "False"]
    assert int(first[3]) > 0 and int(second[2]) > 0 and int(second[3]) == 0
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()


def test_cli_with_an_unwritable_home_warns_once_and_runs(tmp_path):
    home = tmp_path / "home"
    home.write_text("not a directory")
    env = {k: v for k, v in os.environ.items() if k not in ("BAYESHF_JAX_CACHE", "XDG_CACHE_HOME")}
    done = subprocess.run([sys.executable, "-m", "bayeshf", "inspect", str(data_path("thesis/2_bin_corr.json"))],
                          capture_output=True, text=True, cwd=ROOT, env={**env, "HOME": str(home)}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    warnings = [line for line in done.stderr.splitlines() if "cache" in line]
    assert len(warnings) == 1 and warnings[0].startswith("bayeshf: warning: the compilation cache directory")


def _import_graph() -> dict[str, set[str]]:
    """bayeshf's top-level modules -> the bayeshf modules they import (at module level or inside functions)."""
    import ast

    graph = {}
    for path in (ROOT / "bayeshf").glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bayeshf"):
                if node.module == "bayeshf":
                    deps.update(f"bayeshf.{alias.name}" for alias in node.names)
                else:
                    deps.add(".".join(node.module.split(".")[:2]))
            elif isinstance(node, ast.Import):
                deps.update(".".join(a.name.split(".")[:2]) for a in node.names if a.name.startswith("bayeshf."))
        graph[f"bayeshf.{path.stem}"] = deps - {f"bayeshf.{path.stem}"}
    return graph


def test_no_import_circles_between_core_modules():
    graph = _import_graph()
    assert {"bayeshf.priors", "bayeshf.arrays", "bayeshf.model", "bayeshf.sampling"} <= set(graph)
    circles = set()

    def walk(start, node, path):
        for dep in graph.get(node, ()):
            if dep == start:
                circles.add(tuple(sorted(path)))
            elif dep in graph and dep not in path:
                walk(start, dep, path + [dep])

    for module in graph:
        walk(module, module, [module])
    assert circles <= {("bayeshf.distributed", "bayeshf.grid")}, sorted(circles)  # that one: issue of the grid code


def test_compiled_chain_programs_keep_no_model_alive():
    """The chain programs are cached by posterior structure; the cache holds no model (its device arrays)."""
    import gc
    import weakref

    from bayeshf.sampling import run_chains
    from bayeshf.posterior import Posterior

    model = bayeshf.load(data_path("thesis/2_bin_corr.json"))
    posterior = Posterior(model)
    run_chains(posterior, chains=1, warmup=10, draws=10, seed=0, progress=False)
    gone, posterior_gone = weakref.ref(model), weakref.ref(posterior)
    del model, posterior
    gc.collect()
    assert gone() is None and posterior_gone() is None


def test_the_command_line_answers_mistakes_and_help_without_importing_jax():
    script = ("import sys, contextlib, io\n"
              "from bayeshf.cli import main\n"
              "with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):\n"
              "    codes = [main(['sample', '--bogus']), main(['--help']), main(['fit'])]\n"
              "print(codes, 'jax' in sys.modules)\n")
    assert _python(script) == "[2, 0, 2] False"
    # bayeshf.fit stays the function when the submodule is imported later; JAX then starts in float64
    after = _python("import bayeshf, jax.numpy as jnp, importlib; fit = importlib.import_module('bayeshf.fit'); "
                    "from bayeshf.fit import FitResult; print(callable(bayeshf.fit), bayeshf.fit is fit.fit, "
                    "jnp.ones(1).dtype)")
    assert after == "True True float64"
