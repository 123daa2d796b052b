"""Inference: model loading, the torch and ONNX classifiers, predict, explain, export."""
