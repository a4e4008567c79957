"""difftrt: fast diffusion-model sampling on exported engines (ONNX Runtime, TensorRT, PyTorch reference).

Importing the package has no side effects: no torch, no onnxruntime, no environment changes.
"""

__version__ = "0.1.0"
