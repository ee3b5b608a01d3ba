"""Measurements of result models: complexity, ONNX export and parity, and profiling."""
