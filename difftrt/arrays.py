"""The array module of the arrays at hand, so that the schedulers and the sampling loop run wherever the
latents live: NumPy on the host, CuPy (or torch) on a GPU, without a latent-sized copy per step. What still
crosses each step is small: the (B,) timestep the U-Net adapter hands its engine, and on stochastic steps
the host-drawn noise; engines with their own stream (TensorRT, ONNX Runtime) also wait for it per call.

Everything the loop does to an array goes through ``namespace(x)``, the Array API standard namespace of
``x`` (``array_api_compat``: NumPy, CuPy, torch; any library that implements the standard, such as
``array_api_strict``, which the tests use to prove that no host-only NumPy call is left). Tables that the
schedulers compute once (ᾱ, σ, timesteps) stay NumPy on the host and enter the step as Python floats.

Random draws stay on the host, from the request's seeded ``numpy.random.Generator``, and are copied to the
device (``like``): one latent-sized copy per stochastic step, and the same seed gives the same image on
every backend.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def namespace(*arrays: Any) -> Any:
    """The Array API namespace shared by ``arrays`` (``array_api_compat.numpy`` for NumPy arrays)."""
    from array_api_compat import array_namespace

    return array_namespace(*arrays)


def is_host(x: Any) -> bool:
    """True for a NumPy array (or scalar)."""
    return isinstance(x, (np.ndarray, np.generic))


def to_host(x: Any) -> np.ndarray:
    """``x`` as a NumPy array: a device-to-host copy for CuPy and CUDA torch, no copy for host arrays; Python
    scalars and sequences become arrays."""
    if is_host(x) or isinstance(x, (int, float, list, tuple)):
        return np.asarray(x)
    from array_api_compat import is_cupy_array, is_torch_array

    if is_cupy_array(x):
        return x.get()
    if is_torch_array(x):
        return x.detach().cpu().numpy()
    return np.from_dlpack(x)


def like(host: np.ndarray, ref: Any, dtype: Any = None) -> Any:
    """``host`` (a NumPy array) moved into the namespace and onto the device of ``ref``, in ``dtype``
    (default: ``ref``'s). For a NumPy ``ref`` this is only a cast (no copy when the dtype already fits)."""
    xp = namespace(ref)
    if is_host(ref):
        return np.asarray(host, dtype=ref.dtype if dtype is None else dtype)
    from array_api_compat import device

    return xp.asarray(host, dtype=ref.dtype if dtype is None else dtype, device=device(ref))


def dtype_name(dtype: Any) -> str:
    """A dtype's NumPy-style name whatever its library: "float32" for ``np.float32``, ``cupy.float32``,
    ``torch.float32`` and ``array_api_strict.float32`` alike."""
    try:
        return np.dtype(dtype).name
    except TypeError:  # torch and array_api_strict dtypes are not NumPy's
        return str(dtype).rsplit(".", 1)[-1]


def cast(x: Any, dtype: Any) -> Any:
    """``x`` in ``dtype`` (a dtype of ``x``'s own namespace); no copy when it already is."""
    return namespace(x).astype(x, dtype, copy=False)
