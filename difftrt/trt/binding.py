"""What a TensorRT plan declares and what one call binds, as pure functions of plain values (no GPU, no CuPy).

    declared_io(trt, engine)             the ICudaEngine's I/O as (inputs, outputs) ``TensorInfo``, NumPy dtype names
    manifest_profiles(plan, spec)        the profile(s) the engine manifest records for a plan, per input tensor
    engine_profiles(engine, spec)        the same as the deserialised engine reports them (checked against the former)
    choose_profile(profiles, shapes)     the index of the first profile holding every input shape, else ShapeError
    buffer_plan(spec, ins, outs)         one device buffer per tensor: (name, shape, dtype, nbytes)

``engine`` is anything with ICudaEngine's ``num_io_tensors`` / ``get_tensor_name(i)`` / ``get_tensor_mode`` /
``get_tensor_dtype`` / ``get_tensor_shape`` (and ``num_optimization_profiles`` / ``get_tensor_profile_shape``);
``trt`` is the ``tensorrt`` or ``tensorrt_rtx`` module, whose enums (``TensorIOMode``, ``DataType``) are compared.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from difftrt.backends.base import TensorInfo
from difftrt.errors import ArtifactError, EngineError, ShapeError
from difftrt.models.specs import ComponentSpec, DimRange, describe_shape
from difftrt.trt.profiles import input_shapes

# TensorRT DataType member -> NumPy dtype name (ml_dtypes' names for the types NumPy lacks)
DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT32": "int32", "INT64": "int64",
          "INT8": "int8", "UINT8": "uint8", "BOOL": "bool", "FP8": "float8_e4m3fn", "INT4": "int4",
          "FP4": "float4_e2m1fn", "E8M0": "float8_e8m0fnu", "DOUBLE": "float64"}
ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "int32": 4, "int64": 8, "int8": 1, "uint8": 1, "bool": 1,
            "float8_e4m3fn": 1, "float64": 8}

Shape = tuple[int, ...]


def trt_dtype_name(dtype: Any) -> str:
    """A TensorRT ``DataType`` (e.g. ``DataType.HALF``) as its NumPy dtype name ("float16")."""
    member = getattr(dtype, "name", str(dtype).rpartition(".")[2])
    if member not in DTYPES:
        raise ArtifactError(f"the plan declares a tensor of TensorRT type {member}, which difftrt does not map")
    return DTYPES[member]


def declared_io(trt: Any, engine: Any) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
    """(inputs, outputs) in the engine's order; a dynamic dimension (-1) is None, e.g. sample (None, 4, None, None)."""
    inputs, outputs = [], []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = engine.get_tensor_mode(name)
        shape = tuple(None if int(d) < 0 else int(d) for d in engine.get_tensor_shape(name))
        info = TensorInfo(name, trt_dtype_name(engine.get_tensor_dtype(name)), shape)
        if mode == trt.TensorIOMode.INPUT:
            inputs.append(info)
        elif mode == trt.TensorIOMode.OUTPUT:
            outputs.append(info)
    return tuple(inputs), tuple(outputs)


@dataclass(frozen=True)
class Profile:
    """One optimisation profile: each input's (min, opt, max) shapes, e.g. unet sample ((1,4,4,4), (2,4,8,8), (4,4,16,16)).
    ``axes`` names each input axis (the spec's symbolic shape) for messages; ``component`` names the plan's."""

    component: str
    shapes: Mapping[str, tuple[Shape, Shape, Shape]]
    axes: Mapping[str, tuple[int | str, ...]]

    def holds(self, name: str, axis: int, size: int) -> bool:
        lo, _, hi = self.shapes[name]
        return lo[axis] <= size <= hi[axis]

    def span(self, name: str, axis: int) -> str:
        lo, _, hi = self.shapes[name]
        return f"{lo[axis]}" if lo[axis] == hi[axis] else f"{lo[axis]}-{hi[axis]}"

    @property
    def static(self) -> bool:
        """min == max for every input: one shape set, the case CUDA graphs are captured for."""
        return all(lo == hi for lo, _, hi in self.shapes.values())


def _profile(spec: ComponentSpec, ranges: Sequence[DimRange], where: str) -> Profile:
    wanted = {r.name for r in spec.dim_ranges}
    if {r.name for r in ranges} != wanted:
        raise ArtifactError(f"{where}: the {spec.name} profile ranges {sorted(r.name for r in ranges)}, its spec "
                            f"{sorted(wanted)}; build the engines again with `difftrt build`")
    shapes = input_shapes(replace(spec, dim_ranges=tuple(ranges)))
    return Profile(spec.name, shapes, {t.name: t.shape for t in spec.inputs})


def manifest_profiles(plan: Mapping[str, Any], spec: ComponentSpec, where: str = "the engine manifest") -> tuple[Profile, ...]:
    """The profile the engine manifest records for ``plan`` (its entry in ``manifest["plans"]``: ``"profile"`` is
    a list of [dimension, min, opt, max], one profile per plan as ``difftrt build`` makes them), per input tensor."""
    try:
        ranges = [DimRange(str(n), int(lo), int(opt), int(hi)) for n, lo, opt, hi in plan["profile"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{where}: the {spec.name} plan entry has no readable profile ({exc})") from None
    return (_profile(spec, ranges, where),)


def engine_profiles(engine: Any, spec: ComponentSpec) -> tuple[Profile, ...]:
    """The profiles the deserialised engine holds: ``get_tensor_profile_shape(name, i)`` -> [min, opt, max] Dims."""
    profiles = []
    for i in range(engine.num_optimization_profiles):
        shapes = {}
        for t in spec.inputs:
            corners = engine.get_tensor_profile_shape(t.name, i)
            shapes[t.name] = tuple(tuple(int(d) for d in c) for c in corners)
        profiles.append(Profile(spec.name, shapes, {t.name: t.shape for t in spec.inputs}))
    return tuple(profiles)


def check_profiles_match(recorded: Sequence[Profile], held: Sequence[Profile], source: str, rebuild: str) -> None:
    """The manifest's profiles must be the plan's own (else the manifest and plan come from different builds)."""
    if [dict(p.shapes) for p in recorded] != [dict(p.shapes) for p in held]:
        first = next((n for a, b in zip(recorded, held) for n in a.shapes if a.shapes[n] != b.shapes.get(n)), None)
        detail = (f"input {first}: {recorded[0].shapes[first]} recorded, {held[0].shapes[first]} in the plan"
                  if first and len(recorded) == len(held) == 1 else f"{len(recorded)} recorded, {len(held)} in the plan")
        raise ArtifactError(f"{source}: its optimisation profiles differ from its manifest's ({detail}); rebuild: {rebuild}")


REBUILD = {"batch": "difftrt build --max-batch N (images per call)", "": "difftrt build --sizes PX,... (pixel sizes)"}


def rebuild_hint(dim: object = None) -> str:
    """How to rebuild for a size outside the plan: --max-batch for the batch, --sizes for a spatial dimension."""
    options = [REBUILD["batch"]] if dim == "batch" else [REBUILD[""]] if isinstance(dim, str) else list(REBUILD.values())
    return "rebuild the plans to hold it: " + " and/or ".join(options)


def choose_profile(profiles: Sequence[Profile], shapes: Mapping[str, Sequence[int]]) -> int:
    """Index of the first profile whose [min, max] holds every input shape (name -> shape, e.g. sample (2, 4, 8, 8)).
    Otherwise a one-line ``ShapeError`` naming the tensor, the dimension, its value and the ranges available."""
    if not profiles:
        raise ArtifactError("the plan records no optimisation profile; build it again with `difftrt build`")
    component = profiles[0].component
    names = set(profiles[0].shapes)
    if set(shapes) != names:
        raise ShapeError(f"{component}: inputs {sorted(shapes)} given, the plan takes {sorted(names)}")
    given = {name: tuple(int(d) for d in shape) for name, shape in shapes.items()}
    for name, shape in given.items():
        rank = len(profiles[0].shapes[name][0])
        if len(shape) != rank:
            raise ShapeError(f"{component}: input {name} has rank {len(shape)} {shape}, the plan takes rank {rank} "
                             f"{describe_shape(profiles[0].axes.get(name, ()))}")
    for index, profile in enumerate(profiles):
        if all(profile.holds(n, a, s) for n, shape in given.items() for a, s in enumerate(shape)):
            return index
    for name, shape in given.items():
        for axis, size in enumerate(shape):
            if not any(p.holds(name, axis, size) for p in profiles):
                dims = profiles[0].axes.get(name, ())
                what = f"{dims[axis]} {size}" if axis < len(dims) and isinstance(dims[axis], str) else f"size {size}"
                kind = "the plan's profile takes" if len(profiles) == 1 else "its profiles take"
                raise ShapeError(f"{component}: input {name} axis {axis} ({what}) is outside what the plan was built "
                                 f"for ({kind} {', '.join(p.span(name, axis) for p in profiles)}); "
                                 f"{rebuild_hint(dims[axis] if axis < len(dims) else None)}")
    raise ShapeError(f"{component}: no single profile of the plan holds all of {given}; {rebuild_hint()}")


class Buffer(NamedTuple):
    name: str
    shape: Shape
    dtype: str  # NumPy dtype name, the spec's
    nbytes: int


def buffer_plan(spec: ComponentSpec, input_shapes: Mapping[str, Sequence[int]],
                output_shapes: Mapping[str, Sequence[int]]) -> list[Buffer]:
    """One buffer per tensor, inputs then outputs in the spec's order; output shapes as the execution context
    reports them for these inputs (``context.get_tensor_shape``): a negative or missing one is an ``EngineError``."""
    plan = []
    for kind, tensors, shapes in (("input", spec.inputs, input_shapes), ("output", spec.outputs, output_shapes)):
        for t in tensors:
            if t.name not in shapes:
                raise EngineError(f"{spec.name}: TensorRT gave no shape for {kind} {t.name}")
            shape = tuple(int(d) for d in shapes[t.name])
            if len(shape) != len(t.shape) or any(d < 0 for d in shape):
                raise EngineError(f"{spec.name}: TensorRT resolved {kind} {t.name} to {shape}, expected a shape like "
                                  f"{describe_shape(t.shape)}; are all input shapes set?")
            if t.dtype not in ITEMSIZE:
                raise ArtifactError(f"{spec.name}: {kind} {t.name} has dtype {t.dtype}, which has no device buffer here")
            plan.append(Buffer(t.name, shape, t.dtype, math.prod(shape) * ITEMSIZE[t.dtype]))
    return plan
