"""Compiled programs kept on disk, so that a second run of a command neither traces, lowers nor compiles them.

JAX's persistent compilation cache skips only the compilation: a new process
still traces every program and lowers it to StableHLO to compute the cache
key, which costs more than the compilation it saves on small models
(docs/architecture.md, "Runtime", has the measurement). :class:`StoredJit`
stands in for ``jax.jit``: while :func:`enable` has set a directory (the
command line does, inside the compilation cache), each program is looked up
by a digest of what determines it, and the compiled executable is loaded
from there (``jax.experimental.serialize_executable``) or compiled once and
written. The digest covers bayeshf's source, the versions of JAX, jaxlib,
NumPy and Python, the float64 flag, the devices, the function, the extra key
its maker gives (the parameters a closure was made from), the static
arguments and the argument structure (pickled: a model's static layout is in
its pytree structure), shapes, dtypes and shardings. Anything that cannot be
pickled, or a store that cannot be read or written, falls back to ``jax.jit``.

Loading an executable runs code from the store (as JAX's own cache does): the
store lives in the user's own cache directory.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import jax

#: bayeshf.runtime.configure cuts the store back to this size (oldest first)
STORE_MAX_BYTES = 1 << 29
#: jax.monitoring events of a program loaded from the store / compiled and written to it
LOADED_EVENT, STORED_EVENT = "/bayeshf/stored_programs/loaded", "/bayeshf/stored_programs/stored"
#: argument signatures each program remembers (each holds its arguments' pytree metadata)
_SIGNATURES = 64

_directory: Path | None = None
_environment: bytes | None = None


def enable(directory: str | Path | None) -> Path | None:
    """Keep compiled programs in ``directory`` (None: stop); returns the directory in use or None."""
    global _directory
    if directory is None:
        _directory = None
        return None
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        _directory = None
        return None
    _directory = path
    return path


def _source_digest() -> bytes:
    """bayeshf's own source: a changed function must never load an old program."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.digest()


def _environment_digest() -> bytes:
    global _environment
    if _environment is None:
        import jaxlib
        import numpy as np

        devices = [(d.platform, d.id, d.device_kind) for d in jax.devices()]
        client = jax.devices()[0].client
        parts = (sys.version, jax.__version__, jaxlib.__version__, np.__version__, client.platform_version,
                 bool(jax.config.jax_enable_x64), devices, _cpu_flags())
        _environment = hashlib.sha256(_source_digest() + repr(parts).encode()).digest()
    return _environment


def _cpu_flags() -> str:
    """The host's instruction-set flags: a CPU executable is machine code for them."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return line.strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _leaf_signature(x: Any) -> tuple:
    """Hashable objects, no strings: this runs on every call (the fit's Hessian-vector products); the digest
    of a new signature uses their repr."""
    if isinstance(x, jax.Array):
        return ("array", x.shape, x.dtype, x.weak_type, x.sharding if x.committed else None)
    if isinstance(x, (bool, int, float, complex)):
        return ("python", type(x))
    shape, dtype = getattr(x, "shape", None), getattr(x, "dtype", None)
    if shape is None or dtype is None:
        raise TypeError(f"unsupported argument {type(x).__name__}")
    return ("host", tuple(shape), dtype)


class StoredJit:
    """``jax.jit(fun, static_argnums=...)`` whose executables live in the store while one is enabled.

    ``key``: what else determines ``fun`` (the parameters of the closure it is); must pickle.
    Without a store, or for arguments the store cannot key, calls are ``jax.jit``'s own.
    """

    def __init__(self, fun, *, static_argnums: int | tuple[int, ...] = (), key: Any = (), name: str | None = None):
        self._static = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)
        self._jit = jax.jit(fun, static_argnums=self._static)
        self._name = name or f"{getattr(fun, '__module__', '')}.{getattr(fun, '__qualname__', repr(fun))}"
        self._key = key
        # signature -> digest (bounded: a signature holds its arguments' pytree metadata), digest -> executable
        self._digests: OrderedDict = OrderedDict()
        self._executables: dict = {}

    def __getattr__(self, name: str):  # lower, eval_shape, _cache_size... are jax.jit's
        return getattr(self._jit, name)

    def __call__(self, *args):
        if _directory is None:
            return self._jit(*args)
        static = tuple(args[i] for i in self._static)
        dynamic = tuple(a for i, a in enumerate(args) if i not in self._static)
        leaves, tree = jax.tree_util.tree_flatten(dynamic)
        try:
            signature = (static, tree, tuple(_leaf_signature(x) for x in leaves))
            digest = self._digests.get(signature)
        except TypeError:  # an unhashable static argument or an unknown leaf: jax.jit keys it itself
            return self._jit(*args)
        if digest is None:
            digest = self._digest(static, tree, signature[2])
            if digest is None:
                return self._jit(*args)
            self._digests[signature] = digest
            if len(self._digests) > _SIGNATURES:
                self._digests.popitem(last=False)
        executable = self._executables.get(digest)
        if executable is None:
            executable = self._load_or_compile(digest, args, len(leaves))
            if executable is None:
                return self._jit(*args)
            self._executables[digest] = executable
        compiled, out_tree = executable
        try:
            # the executable takes the flat leaves: equal structures of other model objects share it
            outputs = compiled(*leaves)
        except jax.errors.JaxRuntimeError:  # an entry that loads but does not run: forget it, take jax.jit's path
            self._executables.pop(digest, None)
            self._digests.pop(signature, None)
            try:
                (_directory / f"{digest}.jaxexe").unlink()
            except OSError:
                pass
            return self._jit(*args)
        return jax.tree_util.tree_unflatten(out_tree, outputs)

    def _digest(self, static, tree, leaf_signatures) -> str | None:
        try:
            return hashlib.sha256(_environment_digest() + pickle.dumps(
                (self._name, self._key, static, tree, repr(leaf_signatures)), protocol=5)).hexdigest()
        except Exception:  # a static argument or key that does not pickle: not stored
            return None

    def _load_or_compile(self, digest: str, args, n_leaves: int):
        """(executable taking the flat leaves and returning flat outputs, output structure), or None."""
        path = _directory / f"{digest}.jaxexe"
        try:
            loaded = _load(path.read_bytes(), n_leaves)
        except OSError:
            loaded = None
        if loaded is not None:
            jax.monitoring.record_event(LOADED_EVENT)
            return loaded
        try:  # missing, stale or damaged: compile and (re)write it
            from jax.experimental import serialize_executable

            compiled = _compile_fresh(self._jit.lower(*args))
            device_ids = _device_ids(compiled)
            payload, _, out_tree = serialize_executable.serialize(compiled)
            blob = pickle.dumps((payload, out_tree, device_ids), protocol=5)
        except Exception:  # not serialisable: jax.jit's path
            return None
        try:
            _write_atomic(path, blob)
            jax.monitoring.record_event(STORED_EVENT)
        except OSError:  # a store that cannot be written: this process still uses what it compiled
            pass
        return _load(blob, n_leaves)


def _device_ids(compiled) -> list[int]:
    """The devices a compiled program runs on, in its order (a mesh's order for a sharded one)."""
    shardings = jax.tree_util.tree_leaves((compiled.input_shardings, compiled.output_shardings))
    for sharding in shardings:
        mesh = getattr(sharding, "mesh", None)
        if mesh is not None and getattr(mesh, "devices", None) is not None:
            return [d.id for d in mesh.devices.flat]
    return sorted({d.id for sharding in shardings for d in sharding.device_set})


def _load(blob: bytes, n_leaves: int):
    """A stored program as (executable on the flat leaves, output structure); None if it does not load."""
    from jax.experimental import serialize_executable

    try:
        payload, out_tree, device_ids = pickle.loads(blob)
        by_id = {d.id: d for d in jax.devices()}
        flat_in = jax.tree_util.tree_structure((tuple(range(n_leaves)), {}))
        flat_out = jax.tree_util.tree_structure(list(range(out_tree.num_leaves)))
        # the program's own devices in its order (not the backend's: a one-device program would expect two
        # shards on two devices)
        compiled = serialize_executable.deserialize_and_load(payload, flat_in, flat_out,
                                                             execution_devices=[by_id[i] for i in device_ids])
    except Exception:
        return None
    return compiled, out_tree


def _compile_fresh(lowered):
    """Compile without JAX's persistent cache: an executable that cache loaded serialises without some of its
    kernels (running the stored copy fails with "Function ... not found")."""
    enabled = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        return lowered.compile()
    finally:
        jax.config.update("jax_enable_compilation_cache", enabled)


def _write_atomic(path: Path, blob: bytes) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".jaxexe")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(blob)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def stored_jit(fun=None, *, static_argnums: int | tuple[int, ...] = (), key: Any = ()):
    """Decorator form of :class:`StoredJit` (``@stored_jit`` or ``@stored_jit(static_argnums=0)``)."""
    if fun is None:
        return lambda f: StoredJit(f, static_argnums=static_argnums, key=key)
    return StoredJit(fun, static_argnums=static_argnums, key=key)
