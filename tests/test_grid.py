"""Signal grids (bayeshf.grid): every point equals the single-point answer and pyhf's; patchsets; contours."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest

import bayeshf
from bayeshf import grid
from bayeshf.errors import BayeshfError
from bayeshf.generators import mass_plane_patchset
from bayeshf.infer import hypotest, upper_limit
from bayeshf.patchsets import read_patchset

from conftest import DATA

SBOTTOM = DATA / "sbottom" / "RegionA"
NAMES = ["sbottom_1300_205_60", "sbottom_1400_950_60"]


def _patchset(spec, patches):
    import pyhf

    return {
        "metadata": {"name": "shipped", "description": "the shipped RegionA patches",
                     "digests": {"sha256": pyhf.utils.digest(spec, algorithm="sha256")},
                     "labels": ["m_sbottom", "m_neutralino2", "m_neutralino1"],
                     "references": {"hepdata": "ins1748602"}},
        "patches": [{"metadata": {"name": name, "values": [float(v) for v in name.split("_")[1:]]}, "patch": ops}
                    for name, ops in patches],
        "version": "1.0.0",
    }


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    spec = json.loads((SBOTTOM / "BkgOnly.json").read_text())
    patches = [(name, json.loads((SBOTTOM / f"patch.{name}.json").read_text())) for name in NAMES]
    # a third point whose signal carries a normsys the others lack: another model structure
    extra_name, extra = "sbottom_1300_205_61", copy.deepcopy(patches[0][1])
    for op in extra:
        if isinstance(op.get("value"), dict) and "modifiers" in op["value"]:
            op["value"]["modifiers"].append({"name": "signal_xsec", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}})
    path = tmp_path_factory.mktemp("grid") / "patchset.json"
    path.write_text(json.dumps(_patchset(spec, patches + [(extra_name, extra)])))
    return path, dict(patches + [(extra_name, extra)])


def _single(name, ops):
    return bayeshf.load(SBOTTOM / "BkgOnly.json", patches=[ops])


def test_cls_grid_equals_single_points_and_pyhf(shipped):
    import pyhf

    path, patches = shipped
    result = grid.hypotest_grid(SBOTTOM / "BkgOnly.json", path, batch_size=3)
    assert [p.patch for p in result.points] == list(patches)
    models = {name: _single(name, ops) for name, ops in patches.items()}
    assert len({grid.structure_key(m) for m in models.values()}) == 2  # the extra modifier: a batch of its own
    spec = json.loads((SBOTTOM / "BkgOnly.json").read_text())
    for k, point in enumerate(result.points):
        assert point.error is None
        single = hypotest(models[point.patch], 1.0)
        assert point.CLs_obs == pytest.approx(single.CLs_obs, rel=1e-6)
        np.testing.assert_allclose(point.CLs_exp, single.CLs_exp, rtol=1e-6)
        if k == 1:
            continue  # pyhf on one point of each structure (each pyhf test takes seconds)
        # pyhf with a tight SciPy tolerance (its default stops about 1e-5 away), as tests/test_infer.py
        pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-12))
        try:
            ws = pyhf.Workspace(spec)
            pdf = ws.model(patches=[patches[point.patch]])
            obs, exp = pyhf.infer.hypotest(1.0, ws.data(pdf), pdf, test_stat="qtilde", return_expected_set=True)
        finally:
            pyhf.set_backend("numpy")
        assert point.CLs_obs == pytest.approx(float(obs), rel=1e-5)
        np.testing.assert_allclose(point.CLs_exp, np.asarray(exp, float), rtol=1e-5)
    table = result.table()
    assert table["m_sbottom"] == [1300.0, 1400.0, 1300.0] and table["CLs_obs"][0] == result.points[0].CLs_obs


def test_limit_grid_equals_single_points(shipped):
    path, patches = shipped
    result = grid.upper_limit_grid(SBOTTOM / "BkgOnly.json", path, patches=NAMES, batch_size=3)
    for point in result.points:
        assert point.error is None
        single = upper_limit(_single(point.patch, patches[point.patch]))
        assert point.obs == pytest.approx(single.obs, rel=1e-5)
        np.testing.assert_allclose(point.exp, single.exp, rtol=1e-5)
    assert [p["patch"] for p in result.to_list()] == NAMES and set(result.to_list()[0]) == {"patch", "values", "obs", "exp"}


def test_points_already_computed_survive_an_interrupt(shipped, tmp_path):
    from bayeshf.io import write_json

    path, _ = shipped
    out = tmp_path / "partial.json"
    seen = []

    def save(points):
        write_json(out, [p.to_dict("cls") for p in points])
        seen.append(len(points))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        grid.hypotest_grid(SBOTTOM / "BkgOnly.json", path, patches=NAMES, batch_size=1, on_points=save)
    saved = json.loads(out.read_text())
    assert seen == [1] and len(saved) == 1 and saved[0]["patch"] == NAMES[0] and saved[0]["CLs_obs"] > 0


def test_bad_patchsets_are_one_sentence_naming_the_file(tmp_path, shipped):
    path, _ = shipped
    not_json = tmp_path / "broken.json"
    not_json.write_text("{not json")
    bad_schema = tmp_path / "schema.json"
    bad_schema.write_text(json.dumps({"metadata": {}, "patches": [], "version": "1.0.0"}))
    for bad in (not_json, bad_schema):
        with pytest.raises(BayeshfError, match=str(bad)):
            read_patchset(bad)
    with pytest.raises(BayeshfError, match="no patch named 'nope'"):
        grid.hypotest_grid(SBOTTOM / "BkgOnly.json", path, patches=["nope"])
    other = DATA / "sbottom" / "RegionB" / "BkgOnly.json"
    with pytest.raises(BayeshfError) as info:
        grid.hypotest_grid(other, path)
    assert str(path) in str(info.value) and str(other) in str(info.value) and "another workspace" in str(info.value)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "bayeshf", *args], capture_output=True, text=True, timeout=600)


def test_cli_bad_patchset_exits_2_and_writes_nothing(tmp_path, shipped):
    path, _ = shipped
    out = tmp_path / "out.json"
    for extra in (["--patchset", str(tmp_path / "missing.json")], ["--patchset", str(path), "--patches", "nope"]):
        done = _cli("cls", str(SBOTTOM / "BkgOnly.json"), *extra, "--output-file", str(out))
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not out.exists()
    done = _cli("patchset", "list", str(path), "--workspace", str(DATA / "sbottom" / "RegionB" / "BkgOnly.json"))
    assert done.returncode == 2 and "another workspace" in done.stderr


def test_cli_patchset_list(shipped):
    path, patches = shipped
    done = _cli("patchset", "list", str(path), "--workspace", str(SBOTTOM / "BkgOnly.json"), "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert [p["name"] for p in document["patches"]] == list(patches)
    assert document["labels"] == ["m_sbottom", "m_neutralino2", "m_neutralino1"]
    assert document["verified_against"] == str(SBOTTOM / "BkgOnly.json")


def test_generated_mass_plane_patchset_is_valid_and_falls_with_mass():
    spec = json.loads((SBOTTOM / "BkgOnly.json").read_text())
    template = json.loads((SBOTTOM / "patch.sbottom_1300_205_60.json").read_text())
    doc = mass_plane_patchset(spec, template, n_mass=4, n_ratio=3, mass_range=(400.0, 1500.0))  # 766.67: still a valid name
    ps = read_patchset(doc)
    ps.verify(spec, "RegionA")
    assert len(ps.points) == 12 and ps.labels == ("m1", "m2")
    yields = {p.values: sum(op["value"]["data"][0] for op in p.operations if isinstance(op.get("value"), dict)
                            and "data" in op["value"]) for p in ps.points}
    lowest_ratio = [yields[min(v for v in yields if v[0] == m1)] for m1 in sorted({v[0] for v in yields})]
    assert all(a > b for a, b in zip(lowest_ratio, lowest_ratio[1:]))  # heavier: a smaller cross section


def test_contour_plot(tmp_path):
    from bayeshf.plots.contour import contour

    # CLs falling across the plane: the contour sits where it crosses 0.05
    points = []
    for x in np.linspace(0, 1, 6):
        for y in np.linspace(0, 1, 5):
            cls = float(np.exp(-6 * (1.2 - x - 0.3 * y)))
            points.append({"patch": f"p{x:g}_{y:g}", "values": [x, y], "CLs_obs": cls,
                           "CLs_exp": [cls * f for f in (0.5, 0.7, 1.0, 1.4, 2.0)]})
    points.append({"patch": "bad", "values": [0.5, 0.5], "error": "the free fit did not converge."})
    fig = contour(points, out=tmp_path / "c.png", labels=["m1 [GeV]", "m2 [GeV]"])
    assert (tmp_path / "c.png").stat().st_size > 10_000
    ax = fig.axes[0]
    assert ax.get_xlabel() == "m1 [GeV]" and ax.get_ylabel() == "m2 [GeV]"
    with pytest.raises(BayeshfError):
        contour(points[:2], out=tmp_path / "d.png")
    # no labels: named axes, not "values[0]"; the band's edges are the -1/+1 sigma curves on one triangulation,
    # so every vertex of the expected line lies between them
    import matplotlib.tri as mtri

    from bayeshf.plots.contour import _triangulation, grid_arrays

    fig = contour(points, out=tmp_path / "e.png")
    assert "values" not in fig.axes[0].get_xlabel() and fig.axes[0].get_xlabel()
    values, q, ok, _ = grid_arrays(points)
    tri = _triangulation(values[ok, 0], values[ok, 1])
    minus, plus = (mtri.LinearTriInterpolator(tri, np.log(q[ok, k] / 0.05)) for k in (2, 4))
    expected = [c for c in fig.axes[0].collections if getattr(c, "get_linestyle", None) and c.get_paths()
                and c.get_linestyle()[0][1] is not None]
    vertices = np.concatenate([path.vertices for c in expected for path in c.get_paths()])
    assert len(vertices) > 3
    assert np.all(minus(vertices[:, 0], vertices[:, 1]) <= 1e-9) and np.all(plus(vertices[:, 0], vertices[:, 1]) >= -1e-9)


def test_contour_reads_limits_above_the_bound_and_bayesian_grids(tmp_path):
    from bayeshf.plots.contour import contour, grid_arrays

    points = [{"patch": f"p{i}_{j}", "values": [float(i), float(j)], "obs": 0.2 * (1 + i + j),
               "exp": [0.1 * (1 + i + j) * f for f in (0.5, 0.7, 1.0, 1.4, 2.0)]} for i in range(5) for j in range(4)]
    points[-1] = {"patch": "far", "values": [4.0, 3.0], "obs": 1.6, "exp": [0.4, 0.56, 0.8, None, None],
                  "poi_bound": 1.2, "error": "CLs stays above 0.05 up to mu = 1.2 ..."}
    _, q, ok, kind = grid_arrays(points)
    assert kind == "limit" and ok.all() and q[-1].tolist() == [1.6, 0.4, 0.56, 0.8, 1.2, 1.2]
    bayes = [{"patch": p["patch"], "values": p["values"], "upper_limit": 0.3 * (1 + sum(p["values"])), "mcse": 0.01,
              "rhat": 1.0, "converged": True} for p in points]
    _, q, ok, kind = grid_arrays(bayes)
    assert kind == "bayesian" and ok.all()
    fig = contour(bayes, out=tmp_path / "b.png", labels=["m1", "m2"])
    assert "credible" in fig.axes[0].get_title()


def _counting_patchset(strengths, shapesys=True):
    """A two-bin counting workspace (background, with a shapesys or none) and one signal point per strength."""
    import pyhf

    modifiers = [{"name": "bkg_unc", "type": "shapesys", "data": [5.0, 8.0]}] if shapesys else []
    spec = {"channels": [{"name": "SR", "samples": [
                {"name": "background", "data": [50.0, 60.0], "modifiers": modifiers}]}],
            "observations": [{"name": "SR", "data": [52.0, 61.0]}],
            "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}], "version": "1.0.0"}
    patches = [{"metadata": {"name": f"s{int(10 * s)}", "values": [s, 0.7 * s]},
                "patch": [{"op": "add", "path": "/channels/0/samples/0", "value": {
                    "name": "signal", "data": [s, 0.7 * s],
                    "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]}}]} for s in strengths]
    return spec, {"metadata": {"name": "counting", "description": "test grid", "labels": ["s1", "s2"],
                               "digests": {"sha256": pyhf.utils.digest(spec, algorithm="sha256")},
                               "references": {"hepdata": "ins1234567"}}, "patches": patches, "version": "1.0.0"}


def test_limits_above_the_poi_bound_say_so_and_keep_the_others():
    spec, patchset = _counting_patchset([1.5, 2.5, 30.0])
    result = grid.upper_limit_grid(spec, patchset, batch_size=3)
    wide = copy.deepcopy(spec)
    wide["measurements"][0]["config"]["parameters"] = [{"name": "mu", "bounds": [[0.0, 1000.0]]}]
    for point, ops in zip(result.points, [p["patch"] for p in patchset["patches"]]):
        single = upper_limit(bayeshf.load(wide, patches=[ops]))  # the oracle: no bound in the way
        limits = [point.obs, *point.exp]
        for mine, theirs in zip(limits, [single.obs, *single.exp]):
            if theirs < 10.0:
                assert mine == pytest.approx(theirs, rel=1e-6)
            else:
                assert mine is None
        if any(v is None for v in limits):
            assert point.error.startswith("CLs stays above 0.05 up to mu = 10 ") and "raise the POI bound" in point.error
            assert point.to_dict("limit")["poi_bound"] == 10.0
        else:
            assert point.error is None
    assert result.points[0].obs is None and result.points[1].exp[4] is None and result.points[2].error is None


def test_root_search_steps_out_of_a_noise_floor():
    # just below each root the function sits on a tiny negative plateau, as sqrt(q) from fits converged to
    # 1e-10 can: the secant's steps shrink to nothing there unless the search steps out of it
    roots = np.array([[1.2254184128317616, 3.0, 0.02], [2.5, 40.0, 7.0]])
    for plateau in (-2e-16, -1e-9):
        def evaluate(x):
            d = x - roots
            return np.where((d > -1e-8) & (d < 1e-12), plateau, d), [None] * x.shape[1]

        found, beyond, _ = grid._solve(evaluate, roots - 0.01, np.ones(3), 0.0, 10.0, 40, 1e-9)
        assert beyond.tolist() == [[False] * 3, [False, True, False]]  # 40 lies above the bound 10
        np.testing.assert_allclose(found[~beyond], roots[~beyond], rtol=1e-7)


def test_bayesian_grid_equals_the_posterior_quantile_by_quadrature():
    from scipy import integrate, optimize, stats

    from bayeshf.diagnostics import credible_upper_limit
    from bayeshf.sampling import sample

    # no nuisance parameter: the posterior of mu (flat prior on its bounds [0, 10]) is one-dimensional
    spec, patchset = _counting_patchset([2.0, 6.0, 20.0], shapesys=False)
    result = bayeshf.infer.credible_limit_grid(spec, patchset, seed=1)
    n, b = np.array([52.0, 61.0]), np.array([50.0, 60.0])
    for point, patch in zip(result.points, patchset["patches"]):
        s = np.array(patch["patch"][0]["value"]["data"])

        def density(mu):
            return np.exp(np.sum(stats.poisson.logpmf(n, mu * s + b) - stats.poisson.logpmf(n, b)))

        norm = integrate.quad(density, 0.0, 10.0, limit=200)[0]
        exact = optimize.brentq(lambda u: integrate.quad(density, 0.0, u, limit=200)[0] / norm - 0.95, 1e-6, 10.0)
        row = point.to_dict("bayesian")
        assert point.error is None and row["converged"] and row["rhat"] < 1.01 and row["ess_tail"] >= 400
        assert abs(row["upper_limit"] - exact) < 4.0 * row["mcse"], (row, exact)
    # the single-point path (bayeshf limit --method bayesian: bayeshf.sampling.sample) agrees within MC error
    model = bayeshf.load(spec, patches=[patchset["patches"][1]["patch"]])
    idata = sample(model, seed=2, progress=False, prior_draws=0)
    single, single_mcse = credible_upper_limit(idata.posterior["mu"].values, 0.95)
    mine = result.points[1].bayes
    assert abs(mine["upper_limit"] - single) < 4.0 * np.hypot(mine["mcse"], single_mcse)
    assert result.table()["upper_limit"][1] == mine["upper_limit"] and result.kind == "bayesian"
