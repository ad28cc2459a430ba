"""Inference engines: one interface over PyTorch, ONNX Runtime and TensorRT (pure; no ROS imports).

Heavy or optional dependencies (onnx, onnxruntime, tensorrt) are imported inside the backend modules, so
importing :mod:`scene_perception.engines.base` never fails on a machine without them.
"""
