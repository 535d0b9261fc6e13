"""Every file a model directory (``engines/NAME/``) may hold, named in one place.

Required: ``model.onnx`` and ``model.json``. The rest are optional parts; ``ModelDir`` answers
which ones a directory has (``has_captions``, ``has_queries``, ...), and every other module asks
it rather than naming files itself.
"""

from __future__ import annotations

ONNX_FILE = "model.onnx"  # waveform [batch, samples] -> scores [batch, classes] (+ embedding)
META_FILE = "model.json"  # ModelInfo: labels, thresholds, window, hash of model.onnx
CHECKPOINT_FILE = "model.ckpt"  # torch weights and config: fine-tuning, evaluation (training side only)
TORCHSCRIPT_FILE = "model.pt"  # the torch engine
CAPTION_AUDIO_FILE = "caption_audio.onnx"  # waveform -> decoder memory + clip embedding
CAPTION_CROSS_FILE = "caption_cross.onnx"  # memory -> every layer's cross-attention keys/values
CAPTION_STEP_FILE = "caption_step.onnx"  # one decoder step with the self-attention KV cache
CAPTION_FULL_FILE = "caption_full.onnx"  # fixed-length decoder, written only to time it against the KV cache
TOKENIZER_FILE = "tokenizer.json"  # caption BPE: ids -> text
TEXT_ENCODER_FILE = "text_encoder.onnx"  # query words -> audio-text space
AUDIO_TEXT_FILE = "audio_text.onnx"  # tagger embedding -> audio-text space
VOCAB_FILE = "vocab.json"  # query words -> ids
EVAL_DIR = "eval"  # `rtaudio eval` reports: eval.json, eval.md, plots
EVAL_JSON_FILE, EVAL_MARKDOWN_FILE = "eval.json", "eval.md"
PLAN_SUFFIX = ".plan"  # TensorRT plans, one per device and setting (+ ``.plan.json`` sidecar): rtaudio.tensorrt.plan

REQUIRED_FILES = (META_FILE, ONNX_FILE)
CAPTION_FILES = (CAPTION_AUDIO_FILE, CAPTION_CROSS_FILE, CAPTION_STEP_FILE, TOKENIZER_FILE)  # captions: in a site config
QUERY_FILES = (TEXT_ENCODER_FILE, AUDIO_TEXT_FILE, VOCAB_FILE)  # free-text queries: in a site config
