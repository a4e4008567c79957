"""Engines: one small interface, several backends (ONNX Runtime, PyTorch reference; TensorRT to come)."""
