"""Grids on a real dask.distributed cluster (a scheduler and two worker processes on localhost)."""

from __future__ import annotations

import numpy as np
import pytest

from bayeshf import grid

distributed = pytest.importorskip("distributed")


def _small_grid():
    """A one-channel counting workspace (background + shapesys) and a patchset of 6 signal points."""
    import pyhf

    spec = {
        "channels": [{"name": "SR", "samples": [
            {"name": "background", "data": [50.0, 60.0],
             "modifiers": [{"name": "bkg_unc", "type": "shapesys", "data": [5.0, 8.0]}]}]}],
        "observations": [{"name": "SR", "data": [52.0, 61.0]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }
    patches = []
    for i, s in enumerate((2.0, 4.0, 6.0, 9.0, 13.0, 18.0)):
        sample = {"name": "signal", "data": [s, 0.7 * s],
                  "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]}
        patches.append({"metadata": {"name": f"point_{i}", "values": [100.0 * i, s]},
                        "patch": [{"op": "add", "path": "/channels/0/samples/0", "value": sample}]})
    patchset = {"metadata": {"name": "small", "description": "test grid",
                             "digests": {"sha256": pyhf.utils.digest(spec, algorithm="sha256")},
                             "labels": ["m", "s"], "references": {"hepdata": "ins1234567"}},
                "patches": patches, "version": "1.0.0"}
    return spec, patchset


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                                  memory_limit=0) as local:
        with distributed.Client(local) as client:
            yield client


def test_cluster_results_equal_in_process(cluster):
    spec, patchset = _small_grid()
    local = grid.hypotest_grid(spec, patchset, batch_size=2)
    remote = grid.hypotest_grid(spec, patchset, batch_size=2, scheduler=cluster)
    assert [p.patch for p in remote.points] == [p.patch for p in local.points]
    for a, b in zip(local.points, remote.points):
        assert b.error is None
        assert b.CLs_obs == pytest.approx(a.CLs_obs, rel=1e-12)
        np.testing.assert_allclose(b.CLs_exp, a.CLs_exp, rtol=1e-12)
    # the address form (what --scheduler takes) reaches the same cluster
    by_address = grid.hypotest_grid(spec, patchset, patches=["point_2", "point_3"], batch_size=2,
                                    scheduler=cluster.scheduler.address)
    assert [p.CLs_obs for p in by_address.points] == pytest.approx([p.CLs_obs for p in local.points[2:4]], rel=1e-12)


def test_a_worker_killed_mid_run_loses_no_points(cluster, tmp_path):
    spec, patchset = _small_grid()
    marker = tmp_path / "killed"
    settings = dict(kind="cls", poi_value=1.0, test_stat="qtilde", _kill_marker=str(marker))
    result = grid._run(spec, patchset, None, settings, scheduler=cluster, batch_size=2)
    assert marker.exists()  # a worker process did die in a task
    expected = grid.hypotest_grid(spec, patchset, batch_size=2)
    assert [p.patch for p in result.points] == [p.patch for p in expected.points]
    for a, b in zip(expected.points, result.points):
        assert b.error is None and b.CLs_obs == pytest.approx(a.CLs_obs, rel=1e-12)
