"""Tracing a torch module to ONNX bytes: the one exporter call every graph of a model directory goes through.

A leaf of ``export``: the tagger (``onnx``), the text heads (``text_heads``) and the caption decoder
(``caption_onnx``) all trace here, so none of them imports another to reach it.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import Any

OPSET = 17  # TensorRT 8.6's ONNX parser reads opsets 9..17


class ExportError(RuntimeError):
    """An exported graph failed a check; nothing was written."""


def graph_bytes(
    module: Any, args: tuple[Any, ...], inputs: Sequence[str], outputs: Sequence[str], axes: dict[str, dict[int, str]], opset: int = OPSET
) -> bytes:
    """``module`` traced on ``args`` and exported to ONNX bytes (TorchScript exporter) with named
    inputs/outputs and dynamic ``axes``. Not under no_grad: there PyTorch's Transformer layers take
    their fused fast path, which has no ONNX export."""
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript-exporter deprecation notices
        # a file object is documented and works; torch's stub names paths only
        torch.onnx.export(
            module,
            args,
            buffer,  # type: ignore[arg-type]
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    return buffer.getvalue()
