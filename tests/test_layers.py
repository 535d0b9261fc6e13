"""The house plan (docs/architecture.md), checked on the source: no import circle, no room importing
a room above it. Imports inside functions count too: a lazy import is still an arrow."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import rtaudio

ROOT = Path(rtaudio.__file__).parent

# room -> rooms it must never import (a room is the first part after ``rtaudio.``)
FORBIDDEN = {
    "audiofile": "*",
    "contract": "*",
    "dsp": "*",  # leaves: nothing of rtaudio but themselves
    "model": {"export", "train", "runtime", "bench", "config", "tensorrt", "doctor", "cli"},
    "tensorrt": {"runtime", "train", "export", "model", "config", "bench", "doctor", "cli"},
    "config": {"train", "export", "model", "tensorrt", "bench", "doctor", "cli"},
    "runtime": {"train", "export", "model", "bench", "doctor", "cli"},
    "export": {"train", "bench", "doctor", "cli"},
    "train": {"bench", "doctor", "cli"},
    "bench": {"doctor", "cli"},
    "doctor": {"cli"},
}
LEAF_FRIENDS = {"contract": {"dsp"}, "dsp": {"contract"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the rtaudio modules it imports (anywhere in the file), resolved to real modules."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target.startswith("rtaudio") and target != name:
                    deps.add(target)
        graph[name] = deps
    return graph


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "rtaudio"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_room_imports_a_room_above_it() -> None:
    wrong = []
    for module, deps in import_graph().items():
        forbidden = FORBIDDEN.get(room(module), set())
        for dep in deps:
            target = room(dep)
            if target == room(module):
                continue
            if forbidden == "*":
                bad = target not in LEAF_FRIENDS.get(room(module), set())
            else:
                bad = target in forbidden
            if bad:
                wrong.append(f"{module} -> {dep}")
    assert wrong == []


def test_config_reaches_the_runtime_only_for_plugin_registries() -> None:
    """config.site gathers the plugins' config classes (Frigate's pattern); nothing else of config
    imports the runtime, and plugins import only config.base and config.loader of config."""
    graph = import_graph()
    into_runtime = sorted(f"{m} -> {d}" for m, deps in graph.items() if room(m) == "config" for d in deps if room(d) == "runtime")
    assert all(
        edge.startswith("rtaudio.config.site -> rtaudio.runtime.") and edge.split(" -> ")[1].startswith(("rtaudio.runtime.sources", "rtaudio.runtime.engines"))
        for edge in into_runtime
    ), into_runtime
    plugins = [m for m in graph if m.startswith(("rtaudio.runtime.sources", "rtaudio.runtime.engines"))]
    upward = sorted(
        f"{m} -> {d}" for m in plugins for d in graph[m] if room(d) == "config" and d not in ("rtaudio.config.base", "rtaudio.config.loader", "rtaudio.config")
    )
    assert upward == []


@pytest.mark.parametrize("package", ["rtaudio.runtime", "rtaudio.config", "rtaudio.contract", "rtaudio.tensorrt"])
def test_the_runtime_side_imports_without_torch(package: str) -> None:
    """Every module of the runtime side imports on a device without torch (torch made unimportable)."""
    code = f"""
import importlib, pkgutil, sys
sys.modules['torch'] = None
import {package} as pkg
for info in pkgutil.walk_packages(pkg.__path__, '{package}.'):
    importlib.import_module(info.name)
print('ok')
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_every_module_imports() -> None:
    for info in pkgutil.walk_packages(rtaudio.__path__, "rtaudio."):
        if info.name != "rtaudio.__main__":  # runs the CLI
            importlib.import_module(info.name)
