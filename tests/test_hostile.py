"""The hostile-input corpus (tests/hostile/generate.py) through every command: one sentence, exit 2, nothing left.

The bulk runs in this process through ``bayeshf.cli.main`` (validation fires before anything is compiled);
hangs, signals and resource limits get processes of their own, each under a timeout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hostile.generate import WORKSPACE_COMMANDS, base_spec, cases
from hostile.harness import problems, run_in_process, run_subprocess

ALL_COMMANDS = os.environ.get("BAYESHF_HOSTILE_ALL", "1") != "0"
CATEGORIES = ("files", "numbers", "shapes", "modifiers", "names", "measurements", "patches", "priors", "arguments",
              "plot", "resources")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    import arviz  # noqa: F401  imported once here, not raced by sample's background import thread
    import matplotlib

    matplotlib.use("Agg")
    root = tmp_path_factory.mktemp("hostile")
    return root, cases(root)


def _snapshot(directory: Path) -> set[str]:
    return {str(p) for p in directory.rglob("*")}


def _some_commands(case, number: int) -> list[list[str]]:
    """A workspace case through every command (BAYESHF_HOSTILE_ALL=0: inspect and two more in turn)."""
    runs = case.commands()
    if case.argv[0] != "*" or ALL_COMMANDS:
        return runs
    others = runs[1:]
    return [runs[0], others[number % len(others)], others[(number + 4) % len(others)]]


def test_corpus_covers_every_kind_of_input(corpus):
    _, all_cases = corpus
    assert len(all_cases) >= 200
    kinds = {case.category for case in all_cases}
    assert set(CATEGORIES) <= kinds and "degenerate" in kinds
    commands = {argv[0] for case in all_cases for argv in case.commands()}
    assert set(WORKSPACE_COMMANDS) | {"plot"} <= commands


@pytest.mark.parametrize("category", CATEGORIES)
def test_hostile_input_fails_in_one_sentence(corpus, category, tmp_path, monkeypatch):
    """Exit 2, one error line naming the file (or option), no traceback, no file left behind."""
    root, all_cases = corpus
    monkeypatch.chdir(tmp_path)  # a command that wrote to the working directory would show here
    found = []
    runs = 0
    for number, case in enumerate(all_cases):
        if case.category != category or case.expect != "error" or case.subprocess:
            continue
        case_dir = root / case.name
        for argv in _some_commands(case, number):
            before = _snapshot(case_dir) if case_dir.exists() else set()
            outcome = run_in_process(argv, case.stdin, timeout=60, env=case.env)
            runs += 1
            wrong = problems(case, argv, outcome)
            after = _snapshot(case_dir) if case_dir.exists() else set()
            if after - before:
                wrong.append(f"left behind {sorted(after - before)}")
            if wrong:
                found.append(f"{case.name} [{' '.join(argv[:1])}]: {wrong}: {outcome.stderr.strip()[-300:]}")
    assert runs > 0
    assert not list(tmp_path.iterdir()), "a failing command wrote into the working directory"
    assert not found, "\n".join(found)


def test_degenerate_models_work_or_fail_in_one_sentence(corpus, tmp_path, monkeypatch):
    """All-zero yields and data, a POI with equal bounds, everything fixed: as pyhf does, never a traceback."""
    root, all_cases = corpus
    monkeypatch.chdir(tmp_path)
    found = []
    for case in all_cases:
        # compiling costs seconds per run: the all-zero fit is compared with pyhf below
        if case.category != "degenerate" or case.name in ("degenerate-all-zero-sample", "degenerate-all-zero-fit",
                                                          "degenerate-poi-equal-bounds-cls", "degenerate-all-fixed-sample"):
            continue
        for argv in case.commands():
            outcome = run_in_process(argv, case.stdin, timeout=120, env=case.env)
            wrong = problems(case, argv, outcome)
            if wrong:
                found.append(f"{case.name}: {wrong}: {outcome.stderr.strip()[-300:]}")
    # legal but odd workspaces elsewhere in the corpus (a BOM, names with newlines or '/', an unknown POI): inspect
    for case in all_cases:
        if case.category == "degenerate" or case.expect != "no-crash":
            continue
        for argv in case.commands():
            if argv[0] == "inspect" or case.name == "names-channel-slash":
                outcome = run_in_process(argv, case.stdin, timeout=120, env=case.env)
                wrong = problems(case, argv, outcome)
                if wrong:
                    found.append(f"{case.name} [{argv[0]}]: {wrong}: {outcome.stderr.strip()[-300:]}")
    assert not found, "\n".join(found)


def test_all_zero_model_fits_as_pyhf_does(corpus):
    """The all-zero model's twice_nll at the best fit is pyhf's (an all-zero bin contributes nothing)."""
    import pyhf

    import bayeshf

    root, all_cases = corpus
    path = root / "degenerate-all-zero-fit" / "workspace.json"
    model = bayeshf.load(path)
    result = bayeshf.fit(model)
    pyhf.set_backend("numpy")
    workspace = pyhf.Workspace(__import__("json").loads(path.read_text()))
    pdf = workspace.model()
    _, twice_nll = pyhf.infer.mle.fit(workspace.data(pdf), pdf, return_fitted_val=True)
    assert result.twice_nll == pytest.approx(float(twice_nll), abs=1e-6)
    assert "successfully" not in result.message or result.success


def test_fifo_without_writer_does_not_hang(tmp_path):
    fifo = tmp_path / "workspace.json"
    os.mkfifo(fifo)
    outcome = run_subprocess(["inspect", str(fifo)], timeout=60)
    assert outcome.code == 2, outcome
    assert "Traceback" not in outcome.stderr and "not a regular file" in outcome.stderr


def test_memory_estimate_refuses_before_the_work(corpus):
    """A model whose Hessian would not fit says how much memory it needs, in one sentence, at once."""
    root, all_cases = corpus
    case = next(c for c in all_cases if c.name == "resources-huge-model-fit")
    start = time.perf_counter()
    outcome = run_in_process(case.argv, env={"BAYESHF_MEMORY_LIMIT": "50000000"})
    assert outcome.code == 2 and "GiB of memory" in outcome.stderr and "BAYESHF_MEMORY_LIMIT" in outcome.stderr
    assert time.perf_counter() - start < 30  # no fit was attempted (a fit of 3,001 parameters takes minutes)


def _sample_until_sampling(out: Path, draws: int = 20000) -> subprocess.Popen:
    import json

    workspace = out.parent / "workspace.json"
    workspace.write_text(json.dumps(base_spec()))
    process = subprocess.Popen(
        [sys.executable, "-m", "bayeshf", "sample", str(workspace), "--chains", "1", "--warmup", "100", "--draws",
         str(draws), "--target-ess", "0", "--no-plots", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = b""
    deadline = time.monotonic() + 240
    while b"sampling" not in seen and time.monotonic() < deadline and process.poll() is None:
        chunk = os.read(process.stderr.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    assert b"sampling" in seen, seen.decode(errors="replace")
    return process


@pytest.mark.parametrize("signals, code", [((signal.SIGINT,), 130), ((signal.SIGTERM, signal.SIGTERM), 143)])
def test_signal_keeps_the_draws_and_removes_temporaries(tmp_path, signals, code):
    """Ctrl-C or SIGTERM during sampling: the draws so far saved atomically, no .tmp left, exit 128 + signal."""
    out = tmp_path / "out"
    process = _sample_until_sampling(out)
    for number in signals:
        process.send_signal(number)
        time.sleep(0.2)
    try:
        _, stderr = process.communicate(timeout=240)
    finally:
        process.kill()
    stderr = stderr.decode(errors="replace")
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr
    names = sorted(p.name for p in out.iterdir())
    assert "posterior.nc" in names, (names, stderr)
    assert not [n for n in names if ".tmp" in n or n.startswith(".")], names
    import arviz as az

    posterior = az.from_netcdf(out / "posterior.nc")
    assert posterior.posterior.attrs["interrupted"]
    assert 0 < posterior.posterior.sizes["draw"] < 20000


def test_ppc_of_thousands_of_channels_draws_the_farthest_few(tmp_path):
    """A 300-channel predictive check draws MAX_PPC_PANELS panels: the channels whose data are off, and says so."""
    import arviz as az
    import numpy as np

    from bayeshf.plots import bayes

    rng = np.random.default_rng(1)
    names = [f"ch{i:03d}" for i in range(300)]
    predictive = {n: rng.poisson(20.0, size=(1, 200, 2)) for n in names}
    observed = {n: np.array([20.0, 20.0]) for n in names}
    off = {"ch017", "ch123", "ch299"}
    for name in off:
        observed[name] = np.array([20.0, 60.0])
    idata = az.from_dict(posterior={"mu": rng.normal(size=(1, 200))}, posterior_predictive=predictive,
                         observed_data=observed)
    chosen = bayes._farthest_channels(idata, names, bayes.MAX_PPC_PANELS)
    assert len(chosen) == bayes.MAX_PPC_PANELS and off <= set(chosen)
    figure = bayes.ppc(idata, out=tmp_path / "ppc.png")
    assert (tmp_path / "ppc.png").stat().st_size > 0
    assert len(figure.axes) == bayes.MAX_PPC_PANELS
    assert f"{bayes.MAX_PPC_PANELS} of 300 channels" in figure._suptitle.get_text()
    import matplotlib.pyplot as plt

    plt.close(figure)


def test_signal_during_a_write_waits_for_the_file(tmp_path):
    """SIGTERM while posterior.nc is written: the file is completed and moved into place, then the run stops."""
    from bayeshf import cli, io

    target = tmp_path / "posterior.nc"
    with pytest.raises(cli.Terminated):
        with cli._signals_handled():
            with io.atomic_path(target) as tmp:
                tmp.write_bytes(b"first half ")
                os.kill(os.getpid(), signal.SIGTERM)  # handled between these two writes
                time.sleep(0.1)
                tmp.write_bytes(b"first half and second half")
    assert target.read_bytes() == b"first half and second half"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["posterior.nc"]
    assert cli._interrupted("sample") == 143


def test_error_during_a_write_leaves_no_temporary(tmp_path):
    from bayeshf import io

    (tmp_path / "posterior.nc").write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with io.atomic_path(tmp_path / "posterior.nc") as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["posterior.nc"]
    assert (tmp_path / "posterior.nc").read_bytes() == b"old"


def test_an_interrupt_wrapped_by_a_library_callback_is_still_an_interrupt():
    from bayeshf.errors import interrupt_behind

    def wrapped():
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            raise ValueError("exception raised while checking equality of metadata fields") from interrupt

    with pytest.raises(ValueError) as caught:
        wrapped()
    assert isinstance(interrupt_behind(caught.value), KeyboardInterrupt)
    assert interrupt_behind(ValueError("plain")) is None
