"""Face detection, emotion classification and their run-time paths (PyTorch or onnxruntime)."""
