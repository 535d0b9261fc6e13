"""Adding a source type or an engine backend is one new file: the worked examples of
docs/architecture.md, dropped into the plugin folders (their search paths, in a fresh process),
are validated by the site schema, documented by the config reference and built by the factories,
with no other file touched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, tiny_site

CODE = r"""
import importlib.util, json, sys, time
from pathlib import Path

examples = Path(sys.argv[1])
for package, folder in (("rtaudio.runtime.sources", "sources"), ("rtaudio.runtime.engines", "engines")):
    spec = importlib.util.find_spec(package)  # the package's search path gets the example's folder, as if the file were copied in
    spec.submodule_search_locations.append(str(examples / folder))
    module = importlib.util.module_from_spec(spec)
    sys.modules[package] = module
    spec.loader.exec_module(module)

from rtaudio.config.load import load_site_config
from rtaudio.config.loader import ConfigError
from rtaudio.runtime.engines import create_engine
from rtaudio.runtime.sources import create_source

site = Path(sys.argv[2])
config = load_site_config(site)
got = []
source = create_source(config.sources[0], 16000, lambda samples, t: got.append(samples))
source.start()
deadline = time.time() + 5
while sum(map(len, got)) < 1600 and time.time() < deadline:
    time.sleep(0.01)
source.stop()
import numpy as np
audio = np.concatenate(got)
peak_hz = float(np.argmax(np.abs(np.fft.rfft(audio[:1600]))) * 16000 / 1600)
from rtaudio.contract import load_model_dir
with create_engine(config.engine, load_model_dir(config.model)) as engine:
    scores = engine.infer(np.zeros((2, engine.model.info.window_samples), np.float32))["scores"]
bad = site.with_name("bad.yaml")
bad.write_text(site.read_text().replace("frequency_hz: 500", "frequency_hz: -1"))
try:
    load_site_config(bad)
    problem = ""
except ConfigError as exc:
    problem = exc.problems[0]
sys.path.insert(0, str(Path(sys.argv[3])))
import gen_config_docs
print(json.dumps({"peak_hz": peak_hz, "scores": scores.tolist(), "engine": engine.description, "problem": problem,
                  "documented": "## sources[] type: tone" in gen_config_docs.render() and "## engine type: constant" in gen_config_docs.render()}))
"""


def test_a_source_and_an_engine_each_added_as_one_file(tmp_path: Path) -> None:
    model = tiny_site(tmp_path)
    config = tmp_path / "tone.yaml"
    config.write_text(
        f"site: t\nmodel: {model.path}\nengine: {{type: constant, score: 0.25}}\nmqtt: null\nsources:\n  - {{id: gen, type: tone, frequency_hz: 500}}\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", CODE, str(REPO / "docs" / "examples"), str(config), str(REPO / "tools")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert abs(result["peak_hz"] - 500) <= 10
    assert result["engine"] == "constant" and all(s == 0.25 for row in result["scores"] for s in row)
    assert "sources[0].frequency_hz" in result["problem"] and "greater than 0" in result["problem"]
    assert result["documented"]
