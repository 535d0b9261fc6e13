"""The model directory contract: required files named in one place, optional parts answered by ``ModelDir``."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtaudio.contract import ContractError, load_model_dir, missing_files, model_variants
from rtaudio.contract.files import CAPTION_FILES, CHECKPOINT_FILE, META_FILE, ONNX_FILE, QUERY_FILES
from tests.helpers import REPO
from tests.tinymodel import make_tiny_model


def test_optional_parts_are_answered_from_the_files_present(tmp_path: Path) -> None:
    model = make_tiny_model(tmp_path / "m")
    assert not model.has_captions and not model.has_queries and not model.has_checkpoint
    assert model.missing(CAPTION_FILES) == list(CAPTION_FILES) and missing_files(model.path, QUERY_FILES) == list(QUERY_FILES)
    for name in QUERY_FILES:
        (model.path / name).write_bytes(b"x")
    (model.path / CHECKPOINT_FILE).write_bytes(b"x")
    assert model.has_queries and model.has_checkpoint and not model.has_captions


def test_the_shipped_variants_and_their_parts() -> None:
    variants = model_variants(REPO / "engines")
    assert set(variants) >= {"default", "small"}
    default, small = load_model_dir(variants["default"]), load_model_dir(variants["small"])
    assert default.has_captions and default.has_queries and default.has_checkpoint and default.has_torchscript
    assert not small.has_captions and not small.has_queries and small.has_checkpoint


@pytest.mark.parametrize("gone", [META_FILE, ONNX_FILE])
def test_a_missing_required_file_is_named(tmp_path: Path, gone: str) -> None:
    model = make_tiny_model(tmp_path / "m")
    (model.path / gone).unlink()
    with pytest.raises(ContractError, match=f"has no {gone}"):
        load_model_dir(model.path)
    assert model_variants(tmp_path) == ({} if gone == META_FILE else {"m": model.path})


def test_variants_of_a_missing_folder_are_none(tmp_path: Path) -> None:
    assert model_variants(tmp_path / "nope") == {}
