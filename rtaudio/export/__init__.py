"""Checkpoint -> engine: ONNX export with metadata and parity (``onnx``), the FP16-safety pass
(``fp16``), the TensorRT ONNX-parser op check (``trt_ops``) and the TensorRT engine builder.

Nothing heavy is imported here: torch, onnx, onnxslim and tensorrt load inside the modules
that need them, so ``import rtaudio.export`` works on a device with only the runtime installed.
"""
