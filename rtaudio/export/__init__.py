"""Checkpoint -> model directory, offline only: ONNX export with metadata and parity (``onnx``),
the FP16-safety pass (``fp16``) and the text-head graphs (``text_heads``, ``caption_onnx``).
TensorRT's op check and plan builder live in ``rtaudio.tensorrt``, shared with the runtime.

Nothing heavy is imported here: torch, onnx, onnxslim and tensorrt load inside the modules
that need them, so ``import rtaudio.export`` works on a device with only the runtime installed.
"""
