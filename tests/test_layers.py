"""Import layering: a room never imports a room above it (the rest of the house plan comes with issue 11)."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import importlib, pkgutil, sys
import rtaudio.model
for info in pkgutil.walk_packages(rtaudio.model.__path__, "rtaudio.model."):
    importlib.import_module(info.name)
print(sorted({m for m in sys.modules if m.startswith(("rtaudio.export", "rtaudio.train", "rtaudio.runtime", "rtaudio.bench"))}))
"""


def test_the_torch_model_imports_no_export_training_runtime_or_bench_code() -> None:
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
