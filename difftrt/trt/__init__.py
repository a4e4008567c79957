"""TensorRT: building plans from an export (works on CPU with TensorRT-RTX), checking an engine folder against
the machine that would run it, and what the runtime (``difftrt.backends.tensorrt``, on a GPU) reads of a plan."""
