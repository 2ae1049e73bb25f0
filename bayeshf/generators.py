"""Model generators for tests, benchmarks and users: n-bin thesis models and large synthetic models.

- :func:`nbin_workspace` -- the thesis n-bin model (one signal sample scaled by
  the normfactor ``mu``, one background with a shapesys per bin; n + 1
  parameters), as a pyhf JSON workspace dict.
- :func:`synthetic_arrays` -- a large synthetic model (1 signal + 4 flat
  backgrounds, shape systematics as histosys templates, pseudo-data from a
  randomised truth) as dense NumPy arrays, for sizes where JSON is impractical.
- :func:`synthetic_workspace` -- the same model as a workspace dict
  (``synthetic_arrays(...).to_workspace()``), for practical sizes.
- :func:`mass_plane_patchset` -- a HEPData patchset of a signal grid over a
  mass plane, made from one shipped signal patch (grids, contours, benchmarks).

Both paths describe the same HistFactory model: ``bayeshf.load(synthetic_workspace(...))``
and ``HistFactoryModel.from_arrays(synthetic_arrays(...))`` (when the core offers it)
give the same log-density.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["nbin_workspace", "synthetic_arrays", "synthetic_workspace", "SyntheticArrays", "mass_plane_patchset"]

#: per-bin pattern of the thesis' 2_bin_uncorr model, tiled to n bins
THESIS_SIGNAL = (5.0, 10.0)
THESIS_BACKGROUND = (50.0, 60.0)
THESIS_UNCERTAINTY = (5.0, 12.0)


def _tile(values: Sequence[float] | float, n: int, what: str) -> list[float]:
    values = np.atleast_1d(np.asarray(values, dtype=float))
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{what} must be a number or a non-empty 1-d sequence")
    return [float(v) for v in np.resize(values, n)]


def nbin_workspace(
    n: int,
    *,
    signal: Sequence[float] | float = THESIS_SIGNAL,
    background: Sequence[float] | float = THESIS_BACKGROUND,
    uncertainty: Sequence[float] | float = THESIS_UNCERTAINTY,
    observed: Sequence[float] | float | None = None,
) -> dict[str, Any]:
    """The thesis n-bin model as a pyhf workspace dict (n + 1 parameters).

    One channel ``singlechannel`` with a ``signal`` sample scaled by the
    normfactor ``mu`` (the POI) and a ``background`` sample carrying one
    shapesys ``uncorr_bkguncrt`` (one gamma per bin, absolute uncertainties
    ``uncertainty``). Per-bin values are tiled to ``n`` bins, so the defaults
    repeat the thesis' 2_bin_uncorr pattern and ``nbin_workspace(2)`` is that
    workspace. ``observed`` defaults to the background (the thesis' choice).

    >>> ws = nbin_workspace(3)
    >>> ws["channels"][0]["samples"][1]["data"], ws["observations"][0]["data"]
    ([50.0, 60.0, 50.0], [50.0, 60.0, 50.0])
    """
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    n = int(n)
    background_data = _tile(background, n, "background")
    observed_data = background_data if observed is None else _tile(observed, n, "observed")
    return {
        "channels": [
            {
                "name": "singlechannel",
                "samples": [
                    {
                        "name": "signal",
                        "data": _tile(signal, n, "signal"),
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {
                        "name": "background",
                        "data": background_data,
                        "modifiers": [
                            {"name": "uncorr_bkguncrt", "type": "shapesys",
                             "data": _tile(uncertainty, n, "uncertainty")}
                        ],
                    },
                ],
            }
        ],
        "observations": [{"name": "singlechannel", "data": list(observed_data)}],
        "measurements": [{"name": "Measurement", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


@dataclass(frozen=True, eq=False)
class SyntheticArrays:
    """A large synthetic HistFactory model as dense arrays (one channel, histosys only).

    Shapes use S = number of samples (5), K = number of systematics, B = number of bins.

    Attributes:
        channel: the one channel's name (``"synthetic"``).
        sample_names: S sample names ``"background_1"`` ... ``"background_4"``,
            ``"signal"``: the order of the sample axis below, which is pyhf's
            (alphabetical) sample order; the signal is the last sample
            (``signal_index`` = 4).
        systematic_names: K histosys modifier (= parameter) names ``"syst_00000"``, ...,
            zero-padded so that their alphabetical order (pyhf's parameter order)
            is the order of the K axis.
        poi_name: ``"mu"``, a normfactor acting on the signal sample only,
            init 1, bounds [0, 10] (pyhf's defaults).
        nominal: (S, B) float64 nominal yields per sample and bin.
        histosys_up: (K, S, B) float64 up template ``hi_data`` of systematic k on
            sample s: ``nominal[s] * w_ks(x)``.
        histosys_down: (K, S, B) float64 down template ``lo_data``:
            ``nominal[s] * (2 - w_ks(x))`` (symmetric about the nominal).
            Every systematic acts on every sample, with its own shape per sample;
            each is a histosys modifier (Normal(0, 1) constraint, auxdata 0,
            init 0, bounds [-5, 5]) shared by the S samples. No normsys, lumi,
            staterror or shapesys.
        observed: (B,) float64 main-bin pseudo-data (integer counts).
        x: (B,) bin centres on [0, 1], where w is evaluated.
        delta, frequency, phase: (K, S) parameters of
            ``w_ks(x) = 1 + delta_ks * sin(2 pi (frequency_ks * x + phase_ks))``
            with delta ~ N(0, 0.02) clipped to [-0.1, 0.1], phase ~ U(0, 1),
            frequency ~ U(1/4, B).
        mu_true, theta_true: the truth the pseudo-data were drawn from:
            mu_true ~ U(0.5, 1.5), theta_true ~ N(0, 1) (K,), and
            observed ~ Poisson(sum_s nominal[s] + sum_k theta_true[k] * (up - nominal)[k].sum(s)),
            where the signal's terms are scaled by mu_true (the templates are
            symmetric, so histosys code0 is exactly linear).
        seed: the NumPy seed used.

    Total yield per bin is ``yield_per_bin``; signal and each background take
    20% of it in every bin (flat). The model has 1 + K parameters (``mu`` and
    one per systematic); their order in a parameter vector is pyhf's (which
    puts the histosys parameters before ``mu``): use the model's ``par_names``.
    """

    channel: str
    sample_names: tuple[str, ...]
    systematic_names: tuple[str, ...]
    poi_name: str
    nominal: np.ndarray
    histosys_up: np.ndarray
    histosys_down: np.ndarray
    observed: np.ndarray
    x: np.ndarray
    delta: np.ndarray
    frequency: np.ndarray
    phase: np.ndarray
    mu_true: float
    theta_true: np.ndarray
    seed: int

    @property
    def n_bins(self) -> int:
        return int(self.nominal.shape[1])

    @property
    def n_systematics(self) -> int:
        return int(self.histosys_up.shape[0])

    @property
    def signal_index(self) -> int:
        """Index of the signal sample on the sample axis."""
        return self.sample_names.index("signal")

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays (templates dominate: 2 * K * S * B * 8)."""
        return int(sum(a.nbytes for a in (self.nominal, self.histosys_up, self.histosys_down, self.observed)))

    def to_workspace(self) -> dict[str, Any]:
        """The same model as a pyhf JSON workspace dict (practical up to ~10^6 template numbers)."""
        samples = []
        for s, name in enumerate(self.sample_names):
            modifiers: list[dict[str, Any]] = []
            if s == self.signal_index:
                modifiers.append({"name": self.poi_name, "type": "normfactor", "data": None})
            for k, syst in enumerate(self.systematic_names):
                modifiers.append({
                    "name": syst,
                    "type": "histosys",
                    "data": {"hi_data": self.histosys_up[k, s].tolist(), "lo_data": self.histosys_down[k, s].tolist()},
                })
            samples.append({"name": name, "data": self.nominal[s].tolist(), "modifiers": modifiers})
        return {
            "channels": [{"name": self.channel, "samples": samples}],
            "observations": [{"name": self.channel, "data": self.observed.tolist()}],
            "measurements": [{"name": "Measurement", "config": {"poi": self.poi_name, "parameters": []}}],
            "version": "1.0.0",
        }


def synthetic_arrays(
    n_bins: int,
    n_systematics: int,
    seed: int = 0,
    *,
    yield_per_bin: float = 100.0,
) -> SyntheticArrays:
    """The large synthetic model as dense arrays (see :class:`SyntheticArrays` for their meaning).

    Memory is dominated by the two (K, 5, B) float64 template arrays:
    10,000 bins x 1,000 systematics take 2 x 400 MB.

    >>> arrays = synthetic_arrays(4, 2, seed=1)
    >>> arrays.nominal.shape, arrays.histosys_up.shape, arrays.systematic_names
    ((5, 4), (2, 5, 4), ('syst_00000', 'syst_00001'))
    """
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    if int(n_systematics) != n_systematics or n_systematics < 0:
        raise ValueError(f"n_systematics must be a non-negative integer, got {n_systematics!r}")
    n_bins, n_systematics = int(n_bins), int(n_systematics)
    rng = np.random.default_rng(seed)
    sample_names = ("background_1", "background_2", "background_3", "background_4", "signal")
    signal = len(sample_names) - 1
    n_samples = len(sample_names)
    width = max(5, len(str(max(n_systematics - 1, 0))))
    systematic_names = tuple(f"syst_{k:0{width}d}" for k in range(n_systematics))

    x = (np.arange(n_bins) + 0.5) / n_bins
    nominal = np.full((n_samples, n_bins), 0.2 * float(yield_per_bin))
    delta = np.clip(rng.normal(0.0, 0.02, size=(n_systematics, n_samples)), -0.1, 0.1)
    phase = rng.uniform(0.0, 1.0, size=(n_systematics, n_samples))
    frequency = rng.uniform(0.25, float(n_bins), size=(n_systematics, n_samples))

    # shift_ks(x) = nominal_s * delta_ks * sin(...): up = nominal + shift, down = nominal - shift.
    # Built one systematic block at a time to keep temporaries small at 10k x 1k.
    up = np.empty((n_systematics, n_samples, n_bins))
    down = np.empty((n_systematics, n_samples, n_bins))
    mu_true = float(rng.uniform(0.5, 1.5))
    theta_true = rng.normal(0.0, 1.0, size=n_systematics)
    expected = nominal.sum(axis=0) + (mu_true - 1.0) * nominal[signal]
    block = max(1, 2_000_000 // max(1, n_samples * n_bins))
    for start in range(0, n_systematics, block):
        stop = min(start + block, n_systematics)
        arg = frequency[start:stop, :, None] * x[None, None, :] + phase[start:stop, :, None]
        shift = nominal[None] * delta[start:stop, :, None] * np.sin(2.0 * np.pi * arg)
        up[start:stop] = nominal[None] + shift
        down[start:stop] = nominal[None] - shift
        # piecewise-linear (histosys code0) shift at theta_true: the templates are symmetric, so the
        # slope is `shift` on both sides; the signal's shift is scaled by mu like its nominal
        contribution = theta_true[start:stop, None, None] * shift
        contribution[:, signal, :] *= mu_true
        expected += contribution.sum(axis=(0, 1))
    observed = rng.poisson(np.clip(expected, 0.0, None)).astype(float)
    return SyntheticArrays(
        channel="synthetic",
        sample_names=sample_names,
        systematic_names=systematic_names,
        poi_name="mu",
        nominal=nominal,
        histosys_up=up,
        histosys_down=down,
        observed=observed,
        x=x,
        delta=delta,
        frequency=frequency,
        phase=phase,
        mu_true=mu_true,
        theta_true=theta_true,
        seed=int(seed),
    )


def synthetic_workspace(n_bins: int, n_systematics: int, seed: int = 0, *, yield_per_bin: float = 100.0) -> dict[str, Any]:
    """The large synthetic model as a pyhf workspace dict; see :func:`synthetic_arrays`.

    Practical up to about 10^6 template numbers (e.g. 1,000 bins x 100
    systematics); beyond that use :func:`synthetic_arrays`.
    """
    return synthetic_arrays(n_bins, n_systematics, seed, yield_per_bin=yield_per_bin).to_workspace()


def mass_plane_patchset(
    workspace: dict[str, Any],
    template: list,
    *,
    n_mass: int = 25,
    n_ratio: int = 5,
    mass_range: tuple[float, float] = (400.0, 1600.0),
    reference_mass: float = 1300.0,
    falloff: float = 250.0,
    name: str = "sbottom_like",
) -> dict[str, Any]:
    """A HEPData patchset of ``n_mass * n_ratio`` signal points made from one shipped signal patch.

    ``template`` is a JSON patch (list of operations) adding a signal sample,
    e.g. tests/data/sbottom/RegionA/patch.sbottom_1300_205_60.json. Point
    (m1, m2) has m1 on ``linspace(*mass_range, n_mass)`` and
    m2 = r (m1 - 100) for r on ``linspace(0.15, 0.95, n_ratio)``; its signal
    yields (and the absolute histosys/staterror/shapesys data of the sample)
    are the template's times exp(-(m1 - reference_mass) / falloff) * (1.2 - r),
    a cross section falling smoothly with mass and a lower acceptance for
    compressed spectra, so the exclusion contour crosses the plane. The
    patchset's digest is the workspace's (pyhf.utils.digest), labels
    ``m1``, ``m2``.
    """
    import copy

    import pyhf

    absolute = {"histosys": ("hi_data", "lo_data"), "staterror": None, "shapesys": None}
    masses = np.linspace(mass_range[0], mass_range[1], n_mass)
    ratios = np.linspace(0.15, 0.95, n_ratio)
    patches = []
    for m1 in masses:
        for r in ratios:
            m2 = float(round(r * (m1 - 100.0)))
            scale = float(np.exp(-(m1 - reference_mass) / falloff) * (1.2 - r))
            point = f"{name}_{m1:g}_{m2:g}".replace(".", "p")  # patch names allow [a-zA-Z0-9_] only
            operations = copy.deepcopy(template)
            for op in operations:
                sample = op.get("value")
                if not (isinstance(sample, dict) and "data" in sample and "modifiers" in sample):
                    continue
                sample["name"] = point
                sample["data"] = [scale * v for v in sample["data"]]
                for modifier in sample["modifiers"]:
                    if modifier["type"] not in absolute or modifier.get("data") is None:
                        continue
                    keys = absolute[modifier["type"]]
                    if keys is None:
                        modifier["data"] = [scale * v for v in modifier["data"]]
                    else:
                        for key in keys:
                            modifier["data"][key] = [scale * v for v in modifier["data"][key]]
            patches.append({"metadata": {"name": point, "values": [float(m1), m2]}, "patch": operations})
    return {
        "metadata": {
            "name": name,
            "description": f"{len(patches)} signal points generated by bayeshf.generators.mass_plane_patchset",
            "digests": {"sha256": pyhf.utils.digest(workspace, algorithm="sha256")},
            "labels": ["m1", "m2"],
            "references": {"hepdata": "ins1748602"},
        },
        "patches": patches,
        "version": "1.0.0",
    }
