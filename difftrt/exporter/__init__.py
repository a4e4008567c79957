"""Export a checkpoint to ONNX and validate every file against PyTorch (needs the ``[export]`` extra)."""
