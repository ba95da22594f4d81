"""Inputs sharded on a mesh with *explicit* axes (``jax.make_mesh``'s default).

jaxlm's programs map one fit per row with ``vmap`` and run each device's rows under
``shard_map``.  In JAX's explicit sharding mode every intermediate carries its sharding
in its type, and such programs fail to trace: a ``vmap`` over data sharded along the
batch axis beside a start or an index array built unsharded raises "Mapped away
dimension of inputs passed to vmap should be sharded the same", and the gathers of a
model's guess raise a ``ShardingTypeError``.  Nothing in a fit needs the typed
shardings — members never meet — so :func:`auto_axes` runs the call on the mesh's
*Auto* twin (same devices, same axis names, same layout: no data moves) and puts the
results back on the caller's mesh.
"""

from __future__ import annotations

import contextlib
import functools

import jax
from jax.sharding import AxisType, Mesh, NamedSharding


def _explicit(mesh) -> bool:
    return any(t == AxisType.Explicit for t in getattr(mesh, "axis_types", ()))


def _auto_twin(mesh: Mesh) -> Mesh:
    return mesh.update(axis_types=(AxisType.Auto,) * len(mesh.axis_names))


def _concrete_on_explicit_mesh(a) -> bool:
    return (
        isinstance(a, jax.Array)
        and not isinstance(a, jax.core.Tracer)
        and isinstance(a.sharding, NamedSharding)
        and _explicit(a.sharding.mesh)
    )


def _context_mesh() -> Mesh | None:
    """The caller's ``jax.set_mesh`` mesh when it has explicit axes (outside a trace)."""
    if not _explicit(jax.sharding.get_abstract_mesh()):
        return None
    try:
        mesh = jax.sharding.get_mesh()
    except ValueError:  # inside jax.jit: the caller's trace decides the shardings
        return None
    return None if mesh.empty else mesh


def auto_axes(api):
    """Decorator: ``api``'s arguments on explicit mesh axes run on the Auto twin, inside
    a ``jax.set_mesh`` of the twin when the caller set an explicit mesh, and array
    results on the twin go back to the caller's mesh with the same spec."""

    @functools.wraps(api)
    def wrapper(*args, **kwargs):
        meshes = []

        def to_twin(a):
            if not _concrete_on_explicit_mesh(a):
                return a
            meshes.append(a.sharding.mesh)
            return jax.device_put(a, NamedSharding(_auto_twin(a.sharding.mesh), a.sharding.spec))

        args, kwargs = jax.tree_util.tree_map(to_twin, (args, kwargs))
        context_mesh = _context_mesh()
        if context_mesh is not None:
            meshes.append(context_mesh)
        if not meshes:
            return api(*args, **kwargs)
        scope = contextlib.nullcontext()
        if context_mesh is not None:
            scope = jax.set_mesh(_auto_twin(context_mesh))
        with scope:
            out = api(*args, **kwargs)
        twins = {_auto_twin(m): m for m in meshes}

        def back(a):
            sharding = getattr(a, "sharding", None)
            if isinstance(a, jax.Array) and isinstance(sharding, NamedSharding) and sharding.mesh in twins:
                return jax.device_put(a, NamedSharding(twins[sharding.mesh], sharding.spec))
            return a

        return jax.tree_util.tree_map(back, out)

    return wrapper
