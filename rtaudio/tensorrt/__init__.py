"""Everything TensorRT, in one room (like Polygraphy's ``backend/trt``), used by export and runtime alike.

- ``cuda``: the lazily imported tensorrt module and cuda-python bindings, device/pinned buffers, a stream;
- ``ops`` and ``op_table``: the static "will the ONNX parser take this graph?" check (no GPU needed);
- ``plan``: a plan's key (model hash, GPU, TensorRT version, precision, batch), its file name and sidecar;
- ``calibration``: INT8 calibration windows from audio files and the entropy calibrator;
- ``build``: ONNX -> plan for this GPU, and ``ensure_plan`` (the present plan, or a fresh build);
- ``runner``: one deserialised plan run with named tensors on one CUDA stream.

Imports nothing of rtaudio above ``contract`` and ``audiofile``; the runtime's ``tensorrt`` engine
is a thin adaptor over ``ensure_plan`` and ``PlanRunner``. Nothing heavy loads on import.
"""
