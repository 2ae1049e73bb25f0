"""Loading: sources, patches, patchsets, measurements, and one-sentence errors for bad input."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest

import bayeshf
from bayeshf import BayeshfError
from conftest import data_path

SBOTTOM = data_path("sbottom/RegionA/BkgOnly.json")
PATCH = data_path("sbottom/RegionA/patch.sbottom_1300_205_60.json")


def small_spec():
    return json.loads(data_path("pyhf-validation/1bin_lumi.json").read_text())


def test_sources_dict_path_and_stdin_agree(monkeypatch):
    spec = small_spec()
    from_dict = bayeshf.load(spec)
    from_path = bayeshf.load(data_path("pyhf-validation/1bin_lumi.json"))
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(spec)))
    from_stdin = bayeshf.load("-")
    for model in (from_path, from_stdin):
        assert model.par_names == from_dict.par_names
        assert float(model.logpdf(model.init)) == float(from_dict.logpdf(from_dict.init))
    assert spec == small_spec()  # the caller's dict is not modified


def test_patchset_by_name_equals_patch_file(tmp_path):
    patch = json.loads(PATCH.read_text())
    patchset = {
        "metadata": {"references": {"hepdata": "ins1748602"}, "description": "test", "digests": {"sha256": "0" * 64},
                     "labels": ["m_sb"]},
        "patches": [{"metadata": {"name": "sbottom_1300_205_60", "values": [1300]}, "patch": patch}],
        "version": "1.0.0",
    }
    path = tmp_path / "patchset.json"
    path.write_text(json.dumps(patchset))
    direct = bayeshf.load(SBOTTOM, patches=[PATCH])
    by_colon = bayeshf.load(SBOTTOM, patches=[f"{path}:sbottom_1300_205_60"])
    by_keyword = bayeshf.load(SBOTTOM, patchset=path, patches=["sbottom_1300_205_60"])
    assert direct.poi_name == "mu_SIG"
    for model in (by_colon, by_keyword):
        assert model.par_names == direct.par_names
        assert float(model.logpdf(model.init)) == float(direct.logpdf(direct.init))
    with pytest.raises(BayeshfError, match="no patch named 'nope'"):
        bayeshf.load(SBOTTOM, patchset=path, patches=["nope"])
    with pytest.raises(BayeshfError, match="is a patchset"):
        bayeshf.load(SBOTTOM, patches=[path])


def test_background_only_workspace_loads_without_poi():
    with pytest.warns(UserWarning, match="not in the model"):
        model = bayeshf.load(SBOTTOM)
    assert model.poi_name is None and model.poi_index is None


def test_measurement_selection_and_fixed_parameters():
    spec = small_spec()
    second = json.loads(json.dumps(spec["measurements"][0]))
    second["name"] = "fixed_lumi"
    second["config"]["parameters"][0]["fixed"] = True
    spec["measurements"].append(second)
    assert not bayeshf.load(spec).fixed.any()
    model = bayeshf.load(spec, measurement="fixed_lumi")
    assert model.measurement == "fixed_lumi"
    assert model.fixed[model.par_names.index("lumi")]


def test_interpolation_codes_change_the_model():
    path = data_path("thesis/4_bin.json")
    default = bayeshf.load(path)
    old = bayeshf.load(path, modifier_settings={"normsys": {"interpcode": "code1"}, "histosys": {"interpcode": "code0"}})
    assert default.codes == {"normsys": "code4", "histosys": "code4p"}
    assert old.codes == {"normsys": "code1", "histosys": "code0"}
    pars = default.init + 0.5 * (default.bounds[:, 0] < 0)
    assert float(default.logpdf(pars)) != float(old.logpdf(pars))


def mutate(edit):
    spec = small_spec()
    edit(spec)
    return spec


BAD_SPECS = {
    "schema": (lambda s: s["channels"][0]["samples"][0].update(data="x"), r"schema violation at channels\[0\]\.samples\[0\]\.data"),
    "negative yield": (lambda s: s["channels"][0]["samples"][0]["data"].__setitem__(0, -1.0), "negative yield"),
    "nan yield": (lambda s: s["channels"][0]["samples"][0]["data"].__setitem__(0, float("nan")), "non-finite yield"),
    "nan observation": (lambda s: s["observations"][0]["data"].__setitem__(0, float("nan")), "invalid observed count"),
    "impossible bounds": (lambda s: s["measurements"][0]["config"]["parameters"][0].update(bounds=[[2.0, 1.0]]),
                          "impossible bounds"),
    "init outside": (lambda s: s["measurements"][0]["config"]["parameters"][0].update(inits=[50.0]), "outside its bounds"),
    "lumi without sigmas": (lambda s: s["measurements"][0]["config"]["parameters"][0].pop("sigmas"), "needs auxdata and sigmas"),
}


@pytest.mark.parametrize("name", list(BAD_SPECS))
def test_bad_specs_raise_one_sentence(name):
    edit, message = BAD_SPECS[name]
    with pytest.raises(BayeshfError, match=message) as info:
        bayeshf.load(mutate(edit))
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("<workspace in memory>")


def test_bad_files_and_arguments(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(BayeshfError, match=r"bad.json: malformed JSON at line 1"):
        bayeshf.load(bad)
    with pytest.raises(BayeshfError, match="missing.json: no such workspace file"):
        bayeshf.load(tmp_path / "missing.json")
    with pytest.raises(BayeshfError, match="unknown measurement 'nope'"):
        bayeshf.load(small_spec(), measurement="nope")
    with pytest.raises(BayeshfError, match="unknown POI 'nope'"):
        bayeshf.load(small_spec(), poi_name="nope")
    with pytest.raises(BayeshfError, match="interpolation code 'code9'"):
        bayeshf.load(small_spec(), modifier_settings={"normsys": {"interpcode": "code9"}})
    wrong_patch = tmp_path / "patch.json"
    wrong_patch.write_text(json.dumps([{"op": "replace", "path": "/channels/7/name", "value": "x"}]))
    with pytest.raises(BayeshfError, match="patch.json: patch does not apply"):
        bayeshf.load(small_spec(), patches=[wrong_patch])


def run_cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "bayeshf", *map(str, args)], capture_output=True, text=True, input=stdin)


def test_cli_inspect_text_and_json():
    result = run_cli("inspect", SBOTTOM, "--patch", PATCH, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    model = bayeshf.load(SBOTTOM, patches=[PATCH])
    assert info["poi"] == "mu_SIG" and info["npars"] == model.npars
    assert [p["name"] for p in info["parameter_sets"]] == model.par_order
    assert sum(nbins for _, nbins in info["channels"]) == model.nmain
    text = run_cli("inspect", data_path("thesis/4_bin.json"), "--interpcode", "normsys=code1")
    assert text.returncode == 0 and "normsys=code1" in text.stdout and "(POI)" in text.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["inspect", "missing.json"], "missing.json: no such workspace file."),
        (["inspect", data_path("thesis/4_bin.json"), "--measurement", "nope"], "unknown measurement 'nope'"),
        (["inspect", data_path("thesis/4_bin.json"), "--interpcode", "normsys"], "is not of the form MODIFIER=CODE"),
        (["inspect", "-"], "malformed JSON"),
    ],
)
def test_cli_errors_are_one_line_without_traceback(args, message):
    result = run_cli(*args, stdin="{")
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_array_route_equals_json_route():
    from bayeshf.generators import synthetic_arrays, synthetic_workspace

    arrays_model = bayeshf.HistFactoryModel.from_arrays(synthetic_arrays(12, 5, seed=11))
    json_model = bayeshf.load(synthetic_workspace(12, 5, seed=11))
    assert arrays_model.par_names == json_model.par_names
    np.testing.assert_array_equal(arrays_model.observed, json_model.observed)
    rng = np.random.default_rng(2)
    for _ in range(4):
        pars = rng.uniform(json_model.bounds[:, 0], np.minimum(json_model.bounds[:, 1], 3.0))
        assert float(arrays_model.logpdf(pars)) == pytest.approx(float(json_model.logpdf(pars)), rel=1e-12)


# workspaces only: not patches, not the ROOT reference numbers next to pyhf's validation workspaces
@pytest.mark.parametrize("path", sorted(p.relative_to(data_path("")) for p in data_path("").rglob("*.json")
                                        if "patch." not in p.name and "reference" not in p.parts),
                         ids=str)
def test_inspect_summary_on_every_workspace(path):
    from bayeshf.cli.inspect import summary

    model = bayeshf.load(data_path(str(path)))
    info = summary(model)
    assert info["npars"] == sum(p["size"] for p in info["parameter_sets"]) == len(model.par_names)
    assert sum(nbins for _, nbins in info["channels"]) == len(model.observed)
    spec = json.loads(data_path(str(path)).read_text())
    names = {(m["name"], m["type"]) for c in spec["channels"] for s in c["samples"] for m in s["modifiers"]}
    assert sum(info["modifier_types"].values()) == len(names)
