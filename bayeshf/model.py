"""The compiled HistFactory model: an immutable JAX pytree of dense arrays.

The expected rate of sample ``s`` in main bin ``b`` is (CERN-OPEN-2012-016,
pyhf's conventions)::

    nu_sb = (nominal_sb + sum_k histosys_k,sb(alpha_k))
            * prod(normfactor, shapefactor, shapesys, staterror, lumi)_sb
            * prod_k normsys_k,s(alpha_k)

and each of the three parts is one vectorised operation over all modifiers:
a gather-product of parameters through a padded index table, a gather-product
of interpolated normsys factors, and two matrix products of per-parameter
histosys weights with dense shift tables. No Python loop runs in traced code.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln, xlogy
from numpy.typing import ArrayLike

from bayeshf.build import Tables, tables_from_spec
from bayeshf.errors import BayeshfError
from bayeshf.interpolation import DEFAULT_CODES, code4_coefficients, histosys_coefficients, normsys_log_factors
from bayeshf.params import ParameterSet
from bayeshf.stored import stored_jit

__all__ = ["HistFactoryModel", "ParameterSet"]

_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)


class ModelArrays(NamedTuple):
    """Array leaves of a compiled model (all device arrays)."""

    nominal: Any  # (S, B)
    gather_index: Any  # (K + E + S*B*Kf,) into [theta, 1]: histosys, normsys, then per-bin factor parameters
    normsys_param: Any  # (E,) parameter of each normsys entry (sample, channel, parameter)
    normsys_coefficients: Any  # (E, 6)
    normsys_segment: Any  # (E,) sample * C + channel of each entry
    normsys_log_hi: Any  # (E,)
    normsys_log_lo: Any  # (E,)
    normsys_onehot: Any  # (E, S*C) 1 where entry e is in (sample, channel) s*C+c: the sum as a matrix product
    #                      (large normsys tables, see _NORMSYS_PRODUCT); (0, S*C) when the segment sum is used
    bin_channel: Any  # (B,) channel of each bin
    histosys_param: Any  # (K,)
    histosys_table: Any  # (2K, S*B): up templates (first K rows), then down templates
    normal_param: Any  # (Nn,)
    normal_aux_position: Any  # (Nn,)
    poisson_param: Any  # (Np,)
    poisson_factor: Any  # (Np,)
    poisson_aux_position: Any  # (Np,)
    normal_weight: Any  # (npars,) 1/sigma^2 for normal-constrained parameters, else 0
    normal_aux_index: Any  # (npars,) position of each parameter's auxdata, naux (-> 0) if none
    normal_constant: Any  # () sum of -log(sigma) - log(sqrt(2 pi))
    poisson_factor_full: Any  # (npars,) tau for poisson-constrained parameters, else 0
    poisson_aux_index: Any  # (npars,) position of each parameter's auxdata, naux (-> 0) if none
    observed: Any  # (B,)
    auxdata: Any  # (naux,)


class _Static(NamedTuple):
    """Hashable structure that selects the traced program."""

    normsys_code: str
    histosys_code: str
    n_samples: int
    channel_nbins: tuple  # bins per channel, in order

    @property
    def n_channels(self) -> int:
        return len(self.channel_nbins)


def _padded_table(group: np.ndarray, value: np.ndarray, n_groups: int, pad: int) -> np.ndarray:
    """Table (n_groups, K) listing the ``value``s of each group, padded with ``pad``."""
    counts = np.bincount(group, minlength=n_groups) if len(group) else np.zeros(n_groups, dtype=int)
    width = int(counts.max()) if len(group) else 0
    table = np.full((n_groups, width), pad, dtype=np.int32)
    if len(group):
        order = np.argsort(group, kind="stable")
        starts = np.cumsum(counts) - counts
        position = np.arange(len(group)) - np.repeat(starts, counts)
        table[group[order], position] = value[order]
    return table


def _put(values, dtype=None):
    """A device array of ``values`` without a compiled conversion (``jnp.asarray`` compiles one per shape)."""
    return jax.device_put(np.asarray(values, dtype=dtype))


def _safe_log(values: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(values)


#: the normsys log-factors are summed per (sample, channel) by a product with a one-hot (E, S*C) matrix
#: instead of a segment sum (a serial scatter on a CPU, plus the zeros it scatters into) from this many
#: entries, while the matrix stays this small (smaller tables are faster with the segment sum;
#: docs/histfactory.md has the measurements). Only with finite hi/lo
#: logarithms: 0 x inf in the product would make every channel NaN, where the segment sum keeps an
#: infinite entry to its own channel.
_NORMSYS_PRODUCT = (128, 1 << 16)


def _normsys_onehot(segment: np.ndarray, log_hi: np.ndarray, log_lo: np.ndarray, n_segments: int) -> np.ndarray:
    """The (E, n_segments) one-hot matrix of each entry's segment, or (0, n_segments) for the segment sum."""
    E = len(segment)
    finite = bool(np.all(np.isfinite(log_hi)) and np.all(np.isfinite(log_lo)))
    if E < _NORMSYS_PRODUCT[0] or E * n_segments > _NORMSYS_PRODUCT[1] or not finite:
        return np.zeros((0, n_segments))
    onehot = np.zeros((E, n_segments))
    onehot[np.arange(E), segment] = 1.0
    return onehot


def _compile_arrays(tables: Tables) -> ModelArrays:
    S, B = tables.nominal.shape
    C = len(tables.channels)
    npars = sum(p.size for p in tables.parameters)
    factor_index = _padded_table(tables.factor_sample * B + tables.factor_bin, tables.factor_param, S * B, npars)
    bin_channel = np.repeat(np.arange(C), [tables.channel_nbins[c] for c in tables.channels])
    normal = [p for p in tables.parameters if p.constraint == "normal"]
    poisson = [p for p in tables.parameters if p.constraint == "poisson"]
    aux_position, normal_pos, poisson_pos = 0, [], []
    for p in tables.parameters:  # auxdata in parameter order, as pyhf
        if p.constraint is None:
            continue
        positions = list(range(aux_position, aux_position + p.size))
        (normal_pos if p.constraint == "normal" else poisson_pos).extend(positions)
        aux_position += p.size

    def indices(sets):
        return np.asarray([i for p in sets for i in range(p.slice.start, p.slice.stop)], dtype=np.int32)

    def values(sets, field):
        return np.asarray([v for p in sets for v in getattr(p, field)], dtype=float)

    auxdata = np.asarray([v for p in tables.parameters if p.constraint for v in p.auxdata], dtype=float)
    # per-parameter forms of the constraints: elementwise over theta, no gather to differentiate
    normal_index, poisson_index = indices(normal), indices(poisson)
    normal_sigma = values(normal, "sigmas")
    normal_weight = np.zeros(npars)
    normal_weight[normal_index] = 1.0 / normal_sigma**2
    normal_aux_index = np.full(npars, len(auxdata), dtype=np.int32)
    normal_aux_index[normal_index] = normal_pos
    poisson_factor_full = np.zeros(npars)
    poisson_factor_full[poisson_index] = values(poisson, "factors")
    poisson_aux_index = np.full(npars, len(auxdata), dtype=np.int32)
    poisson_aux_index[poisson_index] = poisson_pos
    K = len(tables.histosys_param)
    normsys_segment = tables.normsys_sample * C + tables.normsys_channel
    normsys_log_hi, normsys_log_lo = _safe_log(tables.normsys_hi), _safe_log(tables.normsys_lo)
    # one gather per evaluation (and one scatter in the gradient) for every parameter lookup
    gather_index = np.concatenate([np.asarray(tables.histosys_param, dtype=np.int32),
                                   np.asarray(tables.normsys_param, dtype=np.int32), factor_index.ravel()])
    return ModelArrays(
        nominal=_put(tables.nominal),
        gather_index=_put(gather_index, dtype=np.int32),
        normsys_param=_put(tables.normsys_param, dtype=np.int32),
        normsys_coefficients=_put(code4_coefficients(tables.normsys_hi, tables.normsys_lo)),
        normsys_segment=_put(normsys_segment, dtype=np.int32),
        normsys_log_hi=_put(normsys_log_hi),
        normsys_log_lo=_put(normsys_log_lo),
        normsys_onehot=_put(_normsys_onehot(normsys_segment, normsys_log_hi, normsys_log_lo, S * C)),
        bin_channel=_put(bin_channel, dtype=np.int32),
        histosys_param=_put(tables.histosys_param, dtype=np.int32),
        histosys_table=_put(np.concatenate([tables.histosys_up.reshape(K, S * B),
                                            tables.histosys_down.reshape(K, S * B)])),
        normal_param=_put(indices(normal)),
        normal_aux_position=_put(np.asarray(normal_pos, dtype=np.int32)),
        poisson_param=_put(indices(poisson)),
        poisson_factor=_put(values(poisson, "factors")),
        poisson_aux_position=_put(np.asarray(poisson_pos, dtype=np.int32)),
        normal_weight=_put(normal_weight),
        normal_aux_index=_put(normal_aux_index),
        normal_constant=_put(-np.sum(np.log(normal_sigma)) - len(normal_sigma) * _LOG_SQRT_2PI),
        poisson_factor_full=_put(poisson_factor_full),
        poisson_aux_index=_put(poisson_aux_index),
        observed=_put(tables.observed),
        auxdata=_put(auxdata),
    )


# -- traced functions of (arrays, static, pars) ------------------------------------------


#: up to this many channels, a (sample, channel) factor is spread over the bins by broadcasting (fused
#: into its consumer); above, by a gather
_BROADCAST_CHANNELS = 32


def _spread_over_bins(per_channel, a: ModelArrays, static: _Static):
    """(S, C) per-channel values -> (S, B), each bin taking its channel's value."""
    S = per_channel.shape[0]
    if static.n_channels <= _BROADCAST_CHANNELS:
        return jnp.concatenate([jnp.broadcast_to(per_channel[:, c:c + 1], (S, n))
                                for c, n in enumerate(static.channel_nbins)], axis=1)
    return per_channel[:, a.bin_channel]


def _rates(a: ModelArrays, static: _Static, pars):
    """Expected rate per (sample, bin), shape (S, B)."""
    S, B = a.nominal.shape
    K, E = a.histosys_param.shape[0], a.normsys_param.shape[0]
    width = (a.gather_index.shape[0] - K - E) // (S * B)
    # every parameter lookup of the model in one gather (one scatter-add in the gradient)
    gathered = jnp.concatenate([pars, jnp.ones((1,), pars.dtype)])[a.gather_index]
    rate = a.nominal
    if K:
        c_up, c_down = histosys_coefficients(gathered[:K], static.histosys_code)
        rate = rate + (jnp.concatenate([c_up, c_down]) @ a.histosys_table).reshape(S, B)
    if width:
        factors = gathered[K + E:].reshape(S * B, width)
        if width <= 8:  # a few factors per bin: explicit products compile far faster than prod's gradient
            factor = factors[:, 0]
            for column in range(1, width):
                factor = factor * factors[:, column]
        else:
            factor = jnp.prod(factors, axis=-1)
        rate = rate * factor.reshape(S, B)
    if E:
        log_factors = normsys_log_factors(
            gathered[K:K + E], a.normsys_log_hi, a.normsys_log_lo, a.normsys_coefficients, static.normsys_code
        )
        # product per (sample, channel) as exp(sum(log)): normsys factors are positive
        # wherever the likelihood is defined; a segment sum compiles and differentiates cheaply
        if a.normsys_onehot.shape[0] == E:  # a large table: one matrix product (see _NORMSYS_PRODUCT)
            log_per_channel = log_factors @ a.normsys_onehot
        else:
            log_per_channel = jax.ops.segment_sum(log_factors, a.normsys_segment,
                                                  num_segments=S * static.n_channels)
        rate = rate * jnp.exp(_spread_over_bins(log_per_channel.reshape(S, static.n_channels), a, static))
    return rate


def _expected_counts(a, static, pars):
    return jnp.sum(_rates(a, static, pars), axis=0)


def _expected_auxdata(a, static, pars):
    aux = jnp.zeros(a.auxdata.shape, pars.dtype)
    aux = aux.at[a.normal_aux_position].set(pars[a.normal_param])
    return aux.at[a.poisson_aux_position].set(pars[a.poisson_param] * a.poisson_factor)


def _log_likelihood(a, static, pars, observed):
    rate = _expected_counts(a, static, pars)
    # bins with n = 0 take log(1): their term is -rate either way, and a rate of 0 gives no 0/0 in the gradient
    return jnp.sum(xlogy(observed, jnp.where(observed > 0, rate, 1.0)) - rate - gammaln(observed + 1.0))


def _log_constraint(a, static, pars, auxdata):
    # elementwise over all parameters: unconstrained ones have weight/factor 0 and aux 0
    extended = jnp.concatenate([auxdata, jnp.zeros((1,), auxdata.dtype)])
    total = jnp.zeros((), pars.dtype)
    if a.normal_param.shape[0]:
        shift = pars - extended[a.normal_aux_index]
        total = total + a.normal_constant - 0.5 * jnp.sum(a.normal_weight * shift * shift)
    if a.poisson_param.shape[0]:
        aux = extended[a.poisson_aux_index]
        # unconstrained entries get rate 1 and aux 0 (term -1, added back): no 0/0 in the gradient
        offset = (a.poisson_factor_full == 0).astype(pars.dtype)
        rate = pars * a.poisson_factor_full + offset
        total = total + jnp.sum(xlogy(aux, rate) - rate - gammaln(aux + 1.0) + offset)
    return total


def _logpdf(a, static, pars, observed, auxdata):
    return _log_likelihood(a, static, pars, observed) + _log_constraint(a, static, pars, auxdata)


_jit = functools.partial(stored_jit, static_argnums=(1,))
_expected_counts_jit = _jit(_expected_counts)
_expected_auxdata_jit = _jit(_expected_auxdata)
_rates_jit = _jit(_rates)
_log_likelihood_jit = _jit(_log_likelihood)
_log_constraint_jit = _jit(_log_constraint)
_logpdf_jit = _jit(_logpdf)


def _host_value_and_grad(model: "HistFactoryModel", *, own_data: bool):
    """The jitted ``pars[, observed, auxdata] -> [logpdf, gradient...]`` of ``model``, its arrays as constants.

    ``own_data``: the model's observed and auxiliary data are constants too
    (one argument per call instead of three: less dispatch per call, docs/architecture.md).
    """
    arrays, static = model.arrays, model._static
    if any(isinstance(leaf, jax.core.Tracer) for leaf in arrays):
        raise BayeshfError("HistFactoryModel.value_and_grad runs on the host; inside traced code use "
                           "jax.value_and_grad(model.logpdf).")
    gradient = jax.value_and_grad(_logpdf, argnums=2)

    def packed(pars, observed, auxdata):
        value, grad = gradient(_one_buffer(arrays), static, pars, observed, auxdata)
        return jnp.concatenate([value[None], grad])

    if own_data:
        return jax.jit(lambda pars: packed(pars, arrays.observed, arrays.auxdata))
    return jax.jit(packed)


#: the small float arrays the host program reads from one buffer (not the histosys table, a matrix product's
#: operand, nor the data, whose folded functions (log-gamma terms) must stay folded)
_ONE_BUFFER = ("nominal", "normsys_coefficients", "normsys_log_hi", "normsys_log_lo")


def _one_buffer(a: ModelArrays) -> ModelArrays:
    """``a`` with the _ONE_BUFFER arrays read from one concatenated constant.

    XLA gives every constant of a program its own buffer and every kernel one
    argument per buffer it reads; read from one buffer (kept whole by an
    optimization barrier, else XLA splits it again) the host program's call
    is shorter. Only for the host program: in a compiled loop (a sampler's) the
    barrier costs more than it saves (docs/architecture.md has the measurements).
    """
    leaves = [getattr(a, name) for name in _ONE_BUFFER]
    flat = jax.lax.optimization_barrier(jnp.concatenate([jnp.ravel(leaf) for leaf in leaves]))
    views, offset = {}, 0
    for name, leaf in zip(_ONE_BUFFER, leaves):
        views[name] = flat[offset:offset + leaf.size].reshape(leaf.shape)
        offset += leaf.size
    return a._replace(**views)


def _as_pars(pars):
    return jnp.asarray(pars, dtype=jnp.float64)


@jax.tree_util.register_pytree_node_class
class HistFactoryModel:
    """A compiled HistFactory model; see docs/architecture.md for the contract.

    Immutable: :meth:`with_data` returns a new model. The array leaves live in
    ``arrays``; the parameter table and names are static metadata.
    """

    def __init__(self, arrays: ModelArrays, static: _Static, meta: Mapping[str, Any]):
        self.arrays = arrays
        self._static = static
        self._meta = meta
        # value_and_grad's compiled programs, built on first use: with the model's own data as
        # constants, and with the data as arguments (the latter shared by with_data copies)
        self._host_own_data = None
        self._host = {}  # "program": the data-as-arguments one, in a holder shared with with_data copies

    def __getstate__(self):  # the compiled value_and_grad programs stay behind (they are rebuilt on use)
        return {"arrays": self.arrays, "_static": self._static, "_meta": self._meta}

    def __setstate__(self, state):
        self.__init__(state["arrays"], state["_static"], state["_meta"])

    # -- pytree protocol -----------------------------------------------------------------
    def tree_flatten(self):
        return (self.arrays,), (self._static, _Frozen(self._meta))

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(children[0], aux[0], aux[1].value)

    # -- construction --------------------------------------------------------------------
    @classmethod
    def from_spec(
        cls,
        spec: Mapping[str, Any],
        *,
        measurement: Mapping[str, Any] | None = None,
        codes: Mapping[str, str] | None = None,
        label: str = "<workspace>",
        poi_name: str | None = None,
    ) -> "HistFactoryModel":
        """Compile a validated spec (use :func:`bayeshf.load` for files and checks)."""
        measurement = measurement if measurement is not None else spec["measurements"][0]
        tables, poi = tables_from_spec(spec, measurement, label, poi_name)
        return cls.from_tables(tables, poi, codes, measurement=measurement["name"], spec=spec, label=label)

    @classmethod
    def from_tables(cls, tables: Tables, poi_name, codes=None, *, measurement=None, spec=None, label="<arrays>"):
        codes = dict(DEFAULT_CODES, **(codes or {}))
        static = _Static(codes["normsys"], codes["histosys"], len(tables.samples),
                         tuple(int(tables.channel_nbins[c]) for c in tables.channels))
        arrays = _compile_arrays(tables)
        # keep only the light description on the host; the dense tables live on the device
        light = dataclasses.replace(tables, histosys_up=None, histosys_down=None, nominal=None)
        meta = {
            "tables": light,
            "poi_name": poi_name,
            "measurement": measurement,
            "spec": spec,
            "label": label,
        }
        return cls(arrays, static, meta)

    @classmethod
    def from_arrays(cls, *args, **kwargs) -> "HistFactoryModel":
        """Compile straight from dense arrays; arguments as :func:`bayeshf.arrays.tables_from_arrays`."""
        from bayeshf.arrays import tables_from_arrays

        tables, poi_name, codes, label = tables_from_arrays(*args, **kwargs)
        return cls.from_tables(tables, poi_name, codes, label=label)

    def with_data(self, observed: ArrayLike, auxdata: ArrayLike | None = None) -> "HistFactoryModel":
        """Same model with other main (and optionally auxiliary) data."""
        observed = jnp.asarray(observed, dtype=jnp.float64)
        if observed.shape != self.arrays.observed.shape:
            raise BayeshfError(f"observed data has shape {observed.shape}, the model has {self.nmain} main bins.")
        arrays = self.arrays._replace(observed=observed)
        if auxdata is not None:
            auxdata = jnp.asarray(auxdata, dtype=jnp.float64)
            if auxdata.shape != self.arrays.auxdata.shape:
                raise BayeshfError(f"auxdata has shape {auxdata.shape}, the model has {self.nauxdata}.")
            arrays = arrays._replace(auxdata=auxdata)
        model = HistFactoryModel(arrays, self._static, self._meta)
        model._host = self._host  # the same holder: whichever copy compiles first, all use it
        model._host_own_data = False  # its data are arguments of the shared program
        return model

    def sample_yields(self) -> dict[str, np.ndarray]:
        """Nominal yields {sample: (nmain,) array over all main bins}, 0 where a sample is absent."""
        return {name: self.nominal[s].copy() for s, name in enumerate(self.samples)}

    def with_yields(self, yields: Mapping[str, Any], histosys: Mapping[str, Any] | None = None) -> "HistFactoryModel":
        """Same model with these samples' nominal yields (traceable; see :mod:`bayeshf.diff.yields`).

        Changes what the same change of the samples' ``data`` in the JSON
        would: histosys shifts against the unchanged absolute templates,
        staterror widths and shapesys tau (and its auxdata) from the new nominal.
        ``histosys``: new absolute templates ``{modifier: {sample: (hi_data, lo_data)}}``.
        """
        from bayeshf.diff.yields import with_yields

        return with_yields(self, yields, histosys)

    # -- static description ----------------------------------------------------------------
    @property
    def parameters(self) -> tuple[ParameterSet, ...]:
        return self._meta["tables"].parameters

    @functools.cached_property
    def par_names(self) -> list[str]:
        return [name for p in self.parameters for name in p.par_names]

    @property
    def par_order(self) -> list[str]:
        return [p.name for p in self.parameters]

    @property
    def npars(self) -> int:
        return self.parameters[-1].slice.stop

    @property
    def array_size(self) -> int:
        """Number of elements in the model's arrays (a measure of the work per evaluation)."""
        return sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(self.arrays))

    def par_slice(self, name: str) -> slice:
        for p in self.parameters:
            if p.name == name:
                return p.slice
        raise BayeshfError(f"{self.label}: no parameter named '{name}'.")

    def parameter(self, name: str) -> ParameterSet:
        return self.parameters[[p.name for p in self.parameters].index(name)] if name in self.par_order else None

    @property
    def poi_name(self) -> str | None:
        return self._meta["poi_name"]

    @property
    def poi_index(self) -> int | None:
        return None if self.poi_name is None else self.par_slice(self.poi_name).start

    @functools.cached_property
    def init(self) -> np.ndarray:
        return np.asarray([v for p in self.parameters for v in p.inits], dtype=float)

    @functools.cached_property
    def bounds(self) -> np.ndarray:
        return np.asarray([b for p in self.parameters for b in p.bounds], dtype=float).reshape(-1, 2)

    @functools.cached_property
    def fixed(self) -> np.ndarray:
        return np.asarray([f for p in self.parameters for f in p.fixed], dtype=bool)

    @property
    def channels(self) -> list[str]:
        return list(self._meta["tables"].channels)

    @property
    def channel_nbins(self) -> dict[str, int]:
        return dict(self._meta["tables"].channel_nbins)

    @functools.cached_property
    def channel_slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for name in self.channels:
            out[name] = slice(start, start + self.channel_nbins[name])
            start += self.channel_nbins[name]
        return out

    @property
    def samples(self) -> list[str]:
        return list(self._meta["tables"].samples)

    @property
    def nmain(self) -> int:
        return int(self.arrays.observed.shape[0])

    @property
    def nauxdata(self) -> int:
        return int(self.arrays.auxdata.shape[0])

    @property
    def observed(self) -> np.ndarray:
        return np.asarray(self.arrays.observed)

    @property
    def auxdata(self) -> np.ndarray:
        return np.asarray(self.arrays.auxdata)

    @property
    def data(self) -> np.ndarray:
        """Main and auxiliary data concatenated, as pyhf's ``workspace.data(model)``."""
        return np.concatenate([self.observed, self.auxdata])

    @property
    def nominal(self) -> np.ndarray:
        """Nominal yields per (sample, main bin)."""
        return np.asarray(self.arrays.nominal)

    @property
    def codes(self) -> dict[str, str]:
        return {"normsys": self._static.normsys_code, "histosys": self._static.histosys_code}

    @property
    def measurement(self) -> str | None:
        return self._meta["measurement"]

    @property
    def spec(self) -> Mapping[str, Any] | None:
        return self._meta["spec"]

    @property
    def label(self) -> str:
        return self._meta["label"]

    def __repr__(self) -> str:
        return (
            f"HistFactoryModel({self.label}: {len(self.channels)} channels, {self.nmain} bins, "
            f"{len(self.samples)} samples, {self.npars} parameters, POI {self.poi_name!r})"
        )

    # -- traced evaluation (jittable, differentiable, vmappable) -------------------------------
    def _split(self, data):
        if data is None:
            return self.arrays.observed, self.arrays.auxdata
        data = jnp.asarray(data, dtype=jnp.float64)
        if data.shape[-1] == self.nmain:
            return data, self.arrays.auxdata
        return data[: self.nmain], data[self.nmain :]

    def expected_counts(self, pars: ArrayLike) -> jax.Array:
        """Expected main-bin counts, channels in pyhf's order."""
        return _expected_counts_jit(self.arrays, self._static, _as_pars(pars))

    expected_actualdata = expected_counts

    def expected_rates(self, pars: ArrayLike) -> jax.Array:
        """Expected counts per (sample, main bin)."""
        return _rates_jit(self.arrays, self._static, _as_pars(pars))

    def expected_auxdata(self, pars: ArrayLike) -> jax.Array:
        return _expected_auxdata_jit(self.arrays, self._static, _as_pars(pars))

    def asimov_data(self, pars: ArrayLike) -> jax.Array:
        """Main and auxiliary data expected at ``pars`` (pyhf's ``expected_data``)."""
        return jnp.concatenate([self.expected_counts(pars), self.expected_auxdata(pars)])

    def log_likelihood(self, pars: ArrayLike, observed: ArrayLike | None = None) -> jax.Array:
        """Main Poisson term summed over bins."""
        observed = self.arrays.observed if observed is None else jnp.asarray(observed, dtype=jnp.float64)
        return _log_likelihood_jit(self.arrays, self._static, _as_pars(pars), observed)

    def log_constraint(self, pars: ArrayLike, auxdata: ArrayLike | None = None) -> jax.Array:
        """Sum of the auxiliary (constraint) terms."""
        auxdata = self.arrays.auxdata if auxdata is None else jnp.asarray(auxdata, dtype=jnp.float64)
        return _log_constraint_jit(self.arrays, self._static, _as_pars(pars), auxdata)

    def logpdf(self, pars: ArrayLike, data: ArrayLike | None = None) -> jax.Array:
        """Full log-likelihood, equal to pyhf's ``Model.logpdf(pars, data)[0]``.

        ``data`` is main+aux data (as pyhf) or main data only; default: the observed.
        """
        observed, auxdata = self._split(data)
        return _logpdf_jit(self.arrays, self._static, _as_pars(pars), observed, auxdata)

    def twice_nll(self, pars: ArrayLike, data: ArrayLike | None = None) -> jax.Array:
        return -2.0 * self.logpdf(pars, data)

    # -- host evaluation -------------------------------------------------------------------
    def value_and_grad(self, pars: ArrayLike, data: ArrayLike | None = None) -> tuple[float, np.ndarray]:
        """``logpdf`` and its gradient as a float and a NumPy array: the fast path for host loops.

        For optimisers (scipy, iminuit) and anything else that calls the
        log-density from Python: one compiled program per model, the model's
        arrays held in it as constants and value and gradient returned packed
        in one array (every argument and output of a compiled call costs
        dispatch time, which dominates for models of a few hundred bins).
        ``data`` as in :meth:`logpdf`. Inside traced code use
        ``jax.value_and_grad(model.logpdf)``: the same numbers.
        """
        if type(pars) is not np.ndarray or pars.dtype != np.float64:
            pars = np.asarray(pars, dtype=np.float64)
        if data is None and self._host_own_data is not False:
            if self._host_own_data is None:
                self._host_own_data = _host_value_and_grad(self, own_data=True)
            packed = np.array(self._host_own_data(pars))  # a writable copy (optimisers may change it)
        else:
            program = self._host.get("program")
            if program is None:
                program = self._host["program"] = _host_value_and_grad(self, own_data=False)
            observed, auxdata = (self.arrays.observed, self.arrays.auxdata) if data is None else self._split(data)
            packed = np.array(program(pars, observed, auxdata))
        return float(packed[0]), packed[1:]


class _Frozen:
    """Wrap the metadata dict so the pytree aux data hashes by identity."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, _Frozen) and other.value is self.value

    def __hash__(self):
        return id(self.value)

