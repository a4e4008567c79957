"""Which CUDA GPU this machine has, asked of the driver (``libcuda``) directly: no torch, no CUDA toolkit.
Linux only for now (``libcuda.so.1``; Windows' driver library is ``nvcuda.dll``)."""

from __future__ import annotations

import ctypes


def local_arch() -> str | None:
    """The first CUDA device's compute capability as "sm86", or None when there is no usable GPU."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    count, device, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        return None
    if cuda.cuDeviceGet(ctypes.byref(device), 0) != 0:
        return None
    # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76
    if (cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, device)
            or cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, device)):
        return None
    return f"sm{major.value}{minor.value}"
