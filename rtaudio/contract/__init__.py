"""The contract between training and runtime: the model directory ``engines/NAME/``.

``files`` names every file it may hold; ``model_dir`` reads and checks one (``load_model_dir``)
and answers which optional parts it has; ``vocab`` and ``tokenizer`` read its text files with
numpy and the standard library alone, so the runtime needs neither torch nor ``tokenizers``.
A leaf: imports nothing of rtaudio outside this package.
"""

from rtaudio.contract.model_dir import (
    CONTRACT_VERSION,
    ContractError,
    ModelDir,
    ModelInfo,
    load_model_dir,
    missing_files,
    model_variants,
    sha256_file,
    write_model_dir,
)

__all__ = ["CONTRACT_VERSION", "ContractError", "ModelDir", "ModelInfo", "load_model_dir", "missing_files", "model_variants", "sha256_file", "write_model_dir"]
