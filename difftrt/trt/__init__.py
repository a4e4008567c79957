"""TensorRT: building plans from an export (works on CPU with TensorRT-RTX) and checking an engine folder
against the machine that would run it. Running plans is not implemented yet (the GPU-runtime issue)."""
