"""bayeshf among pyhf, cabinetry and ArviZ: pyhf-shaped JSON, strict JSON, --output-file, file modes,
``load`` of pyhf objects, result reprs, yields, packaging metadata."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np
import pytest

import bayeshf
from bayeshf.cli import main

from conftest import data_path

SMALL = str(data_path("pyhf-validation/2bin_2channel_couplednorm.json"))
SBOTTOM = str(data_path("sbottom/RegionA/BkgOnly.json"))
SBOTTOM_PATCH = str(data_path("sbottom/RegionA/patch.sbottom_1300_205_60.json"))


def _ours(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _pyhf_cli(*args) -> dict | None:
    """pyhf's own command line (the oracle of the JSON shapes), run in this process by click's test runner."""
    from click.testing import CliRunner
    from pyhf.cli import cli

    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    text = result.stdout
    return json.loads(text[text.index("{"):]) if "{" in text else None


def _shape(value):
    """The structure of a JSON value: dict keys, list lengths and leaf types (ints count as numbers)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "number"
    return type(value).__name__


def _same_shape_on_pyhf_keys(ours: dict, theirs: dict):
    for key, value in theirs.items():
        assert key in ours, f"pyhf's key {key!r} is missing"
        assert _shape(ours[key]) == _shape(value), key


# --- pyhf-shaped JSON -------------------------------------------------------------------------------


def test_fit_json_carries_pyhf_keys(capsys):
    ours = _ours(capsys, ["fit", SMALL, "--value"])  # pyhf's flag, accepted
    theirs = _pyhf_cli("fit", "--value", SMALL)
    _same_shape_on_pyhf_keys(ours, theirs)
    assert ours["twice_nll"] == pytest.approx(theirs["twice_nll"], abs=1e-3)
    for name, values in theirs["mle_parameters"].items():
        np.testing.assert_allclose(ours["mle_parameters"][name], values, atol=2e-3)
    # ours stay alongside
    assert "bestfit" in ours and "uncertainties" in ours


def test_cls_json_and_test_poi_alias_match_pyhf(capsys):
    ours = _ours(capsys, ["cls", SMALL, "--test-poi", "1.5"])
    theirs = _pyhf_cli("cls", "--test-poi", "1.5", SMALL)
    assert _shape(ours) == _shape(theirs)  # without --json: exactly pyhf's document
    assert ours["CLs_obs"] == pytest.approx(theirs["CLs_obs"], rel=1e-3)
    ours_full = _ours(capsys, ["cls", SMALL, "--test-poi", "1.5", "--json"])
    _same_shape_on_pyhf_keys(ours_full, theirs)
    assert ours_full["poi_value"] == 1.5


def test_inspect_json_carries_pyhf_keys_exactly(capsys, tmp_path):
    ours = _ours(capsys, ["inspect", SBOTTOM, "--patch", SBOTTOM_PATCH, "--json"])
    patched = tmp_path / "patched.json"
    # pyhf inspect takes no patch: give it the patched workspace
    spec = bayeshf.load(SBOTTOM, patches=[SBOTTOM_PATCH]).spec
    patched.write_text(json.dumps(spec))
    _pyhf_cli("inspect", str(patched), "--output-file", str(tmp_path / "pyhf.json"))
    theirs = json.loads((tmp_path / "pyhf.json").read_text())
    for key, value in theirs.items():
        assert ours[key] == value, key
    assert ours["poi"] == "mu_SIG" and "parameter_sets" in ours


# --- strict JSON and --output-file ------------------------------------------------------------------


def test_json_is_strict_nan_becomes_null():
    from bayeshf.io import dumps_json

    text = dumps_json({"a": float("nan"), "b": [np.inf, -np.inf, np.float32(1.5)], "c": np.arange(2),
                       "d": np.bool_(True)})
    assert json.loads(text) == {"a": None, "b": [None, None, 1.5], "c": [0, 1], "d": True}
    assert "NaN" not in text and "Infinity" not in text


def test_scan_json_parses_strictly(capsys):
    # a range beyond where the profile is defined must not write NaN
    assert main(["scan", SMALL, "--json", "--points", "3"]) == 0
    text = capsys.readouterr().out
    json.loads(text, parse_constant=lambda name: pytest.fail(f"non-strict JSON constant {name}"))


@pytest.mark.parametrize("command", [["fit"], ["cls", "--test-poi", "1"], ["inspect"], ["priors"],
                                     ["significance"]])
def test_output_file_writes_the_json_document(capsys, tmp_path, command):
    out = tmp_path / "sub" / "result.json"
    assert main([command[0], SMALL, *command[1:], "--json", "--output-file", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""  # the document went to the file
    document = json.loads(out.read_text())
    assert isinstance(document, dict) and document
    assert not list(out.parent.glob(".*.tmp*"))  # no temporary file left behind


# --- files written with the user's umask ------------------------------------------------------------


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mode):
    from bayeshf.io import write_json

    old = os.umask(umask)
    try:
        write_json(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == mode


# --- pre-fit and post-fit yields -------------------------------------------------------------------


def test_prefit_yields_known_answer():
    """2_bin_corr: background histosys hi [45, 57], lo [55, 47]: +-5 per bin, 0 on the channel's sum."""
    from bayeshf.infer import yields

    model = bayeshf.load(str(data_path("thesis/2_bin_corr.json")))
    result = yields(model)
    b, s = model.samples.index("background"), model.samples.index("signal")
    np.testing.assert_allclose(result.yields[b], [50, 52])
    np.testing.assert_allclose(result.uncertainties[b], [5, 5], rtol=1e-9)
    np.testing.assert_allclose(result.uncertainties[s], 0.0)  # the normfactor is unconstrained
    assert result.channel_uncertainties[b, 0] == pytest.approx(0.0, abs=1e-9)  # hi and lo both sum to 102
    np.testing.assert_allclose(result.total_uncertainty, [5, 5], rtol=1e-9)
    assert result.to_dict()["channels"]["singlechannel"]["observed"]["yields"] == [53, 65]


def _finite_difference_spread(model, pars, covariance, step=1e-6):
    """sqrt(diag(J C J^T)) of the per-sample-bin rates and of the total, J by central differences."""
    columns = []
    for p in range(pars.size):
        up, down = pars.copy(), pars.copy()
        up[p] += step
        down[p] -= step
        columns.append((np.asarray(model.expected_rates(up)) - np.asarray(model.expected_rates(down))) / (2 * step))
    jac = np.stack(columns, axis=-1)
    per = np.sqrt(np.einsum("sbp,pq,sbq->sb", jac, covariance, jac))
    tot = jac.sum(axis=0)
    return per, np.sqrt(np.einsum("bp,pq,bq->b", tot, covariance, tot))


@pytest.mark.parametrize("path", ["pyhf-validation/2bin_2channel_couplednorm.json", "pyhf-validation/1bin_shapesys.json",
                                  "thesis/4_bin.json"])
def test_postfit_yields_propagate_the_covariance(path):
    """Against finite differences and a Monte Carlo of the parameters (correlations included)."""
    from types import SimpleNamespace

    from bayeshf.yields import yields

    model = bayeshf.load(str(data_path(path)))
    rng = np.random.default_rng(3)
    n = model.npars
    pars = np.asarray(model.init, dtype=float) + rng.uniform(0.05, 0.2, n)
    a = rng.normal(size=(n, n))
    covariance = 1e-3 * (a @ a.T + n * np.eye(n))  # correlated, small enough for the linear regime
    fake = SimpleNamespace(bestfit=pars, covariance=covariance, par_names=tuple(model.par_names))
    result = yields(model, fake)
    assert result.kind == "postfit"
    np.testing.assert_allclose(result.yields, model.expected_rates(pars), rtol=1e-12)
    per, tot = _finite_difference_spread(model, pars, covariance)
    np.testing.assert_allclose(result.uncertainties, per, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(result.total_uncertainty, tot, rtol=1e-5, atol=1e-9)
    draws = rng.multivariate_normal(pars, covariance, size=4000)
    totals = np.asarray(jax.vmap(model.expected_counts)(draws))
    np.testing.assert_allclose(result.total_uncertainty, totals.std(axis=0), rtol=0.06)


def test_postfit_yields_of_a_real_fit_and_a_foreign_fit_is_refused():
    from bayeshf.errors import BayeshfError
    from bayeshf.yields import yields

    model = bayeshf.load(SMALL)
    fit = bayeshf.fit(model)
    result = yields(model, fit)
    np.testing.assert_allclose(result.total, model.expected_counts(fit.bestfit), rtol=1e-12)
    # the fit pulls the model towards the data: the post-fit band is narrower than the pre-fit one
    assert result.total_uncertainty.sum() < yields(model).total_uncertainty.sum()
    other = bayeshf.load(str(data_path("thesis/2_bin_corr.json")))
    with pytest.raises(BayeshfError, match="not of this model"):
        yields(other, fit)


# --- load(pyhf.Workspace), load(pyhf.Model, data=...) -----------------------------------------------


@pytest.mark.parametrize("path", ["pyhf-validation/1bin_lumi.json", "pyhf-validation/1bin_shapesys.json",
                                  "atlas-examples/SRee_SRmm_Srem_v2.json"])
def test_load_accepts_pyhf_objects(path):
    import pyhf

    from bayeshf.errors import BayeshfError

    workspace = pyhf.Workspace(json.loads(data_path(path).read_text()))
    settings = {"normsys": {"interpcode": "code1"}, "histosys": {"interpcode": "code0"}}
    pyhf_model = workspace.model(modifier_settings=settings)
    data = workspace.data(pyhf_model)
    ours = bayeshf.load(pyhf_model, data=data)
    assert ours.par_names == pyhf_model.config.par_names and ours.poi_name == pyhf_model.config.poi_name
    assert ours.codes == {"normsys": "code1", "histosys": "code0"}
    rng = np.random.default_rng(0)
    init = np.asarray(pyhf_model.config.suggested_init())
    for _ in range(3):
        pars = init * rng.uniform(0.8, 1.2, init.size)
        assert float(ours.logpdf(pars)) == pytest.approx(float(pyhf_model.logpdf(pars, data)[0]), rel=1e-10)
    from_workspace = bayeshf.load(workspace)
    np.testing.assert_array_equal(from_workspace.observed, ours.observed)
    with pytest.raises(BayeshfError, match="carries no observations"):
        bayeshf.load(pyhf_model)
    with pytest.raises(BayeshfError, match="needs"):
        bayeshf.load(pyhf_model, data=[1.0] * (pyhf_model.config.nmaindata + 1 + pyhf_model.config.nauxdata))


# --- packaging: ranges, the tested set, py.typed, package data that exists ----------------------------

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_dependencies_are_ranges_whose_lower_bound_is_the_tested_version():
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement
    from packaging.version import Version

    project = _pyproject()["project"]
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            pins[name.strip().lower()] = Version(pinned.strip())
    requirements = [Requirement(r) for r in project["dependencies"]]
    requirements += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    for req in requirements:
        specs = {s.operator: Version(s.version) for s in req.specifier}
        assert "==" not in specs and set(specs) == {">=", "<"}, f"{req}: a range >=tested,<next major"
        assert specs[">="] == pins[req.name.lower()], f"{req}: lower bound is not the tested version"
        low = specs[">="]
        major = Version(f"{low.major + 1}") if low.major >= 1 and req.name not in ("jax", "jaxlib", "xarray") else None
        assert major is None or specs["<"] <= major, f"{req}: upper bound beyond the next major"
        try:
            installed = Version(version(req.name))
        except PackageNotFoundError:
            continue
        assert installed in req.specifier, f"installed {req.name} {installed} outside {req.specifier}"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "-c constraints.txt" in ci


def test_package_data_exists_and_py_typed_ships():
    import glob

    patterns = _pyproject()["tool"]["setuptools"]["package-data"]["bayeshf"]
    assert "py.typed" in patterns and (ROOT / "bayeshf" / "py.typed").is_file()
    for pattern in patterns:
        assert glob.glob(str(ROOT / "bayeshf" / pattern)), f"package-data {pattern!r} matches no file"


# --- compact repr and notebook HTML of result objects -------------------------------------------------


def test_display_decorator_gives_compact_repr_and_html():
    import dataclasses

    from bayeshf._display import display

    @display(("poi",))
    @dataclasses.dataclass(frozen=True)
    class Result:
        par_names: tuple
        bestfit: np.ndarray
        twice_nll: float
        covariance: np.ndarray

        @property
        def poi(self):
            return float(self.bestfit[0])

    names = tuple(f"alpha_{i}" for i in range(132))
    result = Result(names, np.linspace(0, 1, 132), 294.946071234, np.eye(132))
    text = repr(result)
    assert text.startswith("Result(poi=0, ") and "array(132,)" in text and "array(132, 132)" in text
    assert "<132 items>" in text and "294.946" in text and len(text) < 200
    page = result._repr_html_()
    assert all(f">{name}<" in page for name in names)  # every parameter, none cut
    assert page.count("<tr>") == 1 + 1 + 4 + 132  # header of the parameter table, field rows, parameter rows


def test_every_result_class_has_compact_repr_and_html():
    import dataclasses

    import bayeshf.infer as infer
    from bayeshf.toys import ToyHypoTestResult

    classes = [infer.FitResult, infer.HypoTestResult, infer.SignificanceResult, infer.UpperLimitResult,
               infer.CLsScanResult, infer.ScanResult, infer.Scan2DResult, infer.ImpactsResult,
               infer.GroupedImpactsResult, ToyHypoTestResult]
    for cls in classes:
        assert dataclasses.is_dataclass(cls)
        assert hasattr(cls, "_repr_html_") and cls.__repr__.__qualname__.startswith("display."), cls
    model = bayeshf.load(str(data_path("thesis/2_bin_corr.json")))
    fit = bayeshf.fit(model)
    text = repr(fit)
    assert text.startswith("FitResult(poi=") and "array(2, 2)" in text and "\n" not in text
    assert "correlated_bkg_uncertainty" in fit._repr_html_()


def test_patchset_list_output_file(tmp_path, capsys):
    import pyhf

    spec = json.loads(Path(SMALL).read_text())
    patchset = {"metadata": {"name": "tiny", "description": "one point",
                             "digests": {"sha256": pyhf.utils.digest(spec, algorithm="sha256")},
                             "labels": ["m"], "references": {"hepdata": "ins1234567"}},
                "patches": [{"metadata": {"name": "p1", "values": [1.0]},
                             "patch": [{"op": "replace", "path": "/channels/0/samples/0/data/0", "value": 3.0}]}],
                "version": "1.0.0"}
    path = tmp_path / "patchset.json"
    path.write_text(json.dumps(patchset))
    out = tmp_path / "list.json"
    assert main(["patchset", "list", str(path), "--json", "--output-file", str(out)]) == 0
    assert capsys.readouterr().out == ""
    assert "p1" in out.read_text()


def test_public_api_is_typed():
    import inspect
    import typing

    import bayeshf.infer as infer
    from bayeshf.model import HistFactoryModel

    names = {"HistFactoryModel": HistFactoryModel, "AsymptoticCalculator": infer.AsymptoticCalculator,
             "FitResult": infer.FitResult}
    functions = [bayeshf.load, infer.fit, infer.hypotest, infer.significance, infer.cls_scan, infer.upper_limit,
                 infer.profile_scan, infer.profile_scan_2d, infer.impacts, infer.ranking, infer.grouped_impacts,
                 infer.prefit_constraints, infer.yields]
    for function in functions:
        hints = typing.get_type_hints(function, localns=names)
        assert "return" in hints and hints["return"] is not typing.Any, function.__name__
        first = next(iter(inspect.signature(function).parameters))
        assert HistFactoryModel in (typing.get_args(hints[first]) or (hints[first],)) or function is bayeshf.load, \
            function.__name__
    assert typing.get_type_hints(bayeshf.load, localns=names)["return"] is HistFactoryModel
    for method in ("expected_counts", "expected_rates", "logpdf", "log_likelihood", "twice_nll", "value_and_grad",
                   "with_data", "asimov_data"):
        hints = typing.get_type_hints(getattr(HistFactoryModel, method), localns=names)
        assert "pars" in hints or method == "with_data", method
        assert "return" in hints, method


def test_shell_completion_completes_commands_and_choices(tmp_path):
    import subprocess
    import sys

    pytest.importorskip("argcomplete")

    def complete(line: str) -> list[str]:
        out = tmp_path / "completions.txt"
        env = {**os.environ, "_ARGCOMPLETE": "1", "COMP_LINE": line, "COMP_POINT": str(len(line)),
               "_ARGCOMPLETE_STDOUT_FILENAME": str(out), "_ARGCOMPLETE_IFS": "\n"}
        subprocess.run([sys.executable, "-m", "bayeshf"], env=env, capture_output=True, timeout=120)
        return out.read_text().split() if out.exists() else []

    # one call (each imports bayeshf): the datamc command and its --style choices
    assert set(complete("bayeshf datamc ws.json --style ")) == {"atlas", "cms", "plain"}
