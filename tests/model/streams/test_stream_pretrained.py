"""The pretrained (aisfx) stream: its front-end against librosa, its CNN against aisfx's own code
with the real weights, freezing, fetching with a hash check (and training from scratch starting from
the fetched weights), and ONNX export parity.

The weights come from the ``aisfx==0.1.2`` wheel through ``fetch_aisfx`` (cached under
``$RTAUDIO_CACHE`` or ``~/.cache/rtaudio/pretrained``); the tests that need them skip when the
download fails. aisfx's ``cnn2d.py`` is loaded from the wheel by file path (it needs only torch):
the package itself is never installed or imported.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest
import torch

from rtaudio.dsp.sfx_mel import AISFX_MAX, SfxLogMel, sfx_band_edges, sfx_bands, sfx_mel_matrix
from rtaudio.export.onnx import SCORE_ATOL, build_graph, onnx_parity
from rtaudio.model.common import EMBED_DIM, Features
from rtaudio.model.config import ModelConfig
from rtaudio.model.fused import FusedTagger
from rtaudio.model.streams.pretrained import AISFX_DIM, PretrainedStream
from rtaudio.tensorrt.ops import check_model
from rtaudio.train.config import TrainConfig
from rtaudio.train.finetune import build_model
from rtaudio.train.loop import set_stage
from rtaudio.train.parity_windows import synthetic_windows
from rtaudio.train.pretrained import AISFX, aisfx_wheel, fetch_aisfx, load_aisfx_state

librosa = pytest.importorskip("librosa")

BLOCKS = ("conv_block1", "conv_block2", "conv_block3", "conv_block4")


def mixture(sample_rate: int, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """A chirp, a tone and noise at a peak well below 1 (so peak normalisation has work to do)."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    x = 0.2 * np.sin(2 * np.pi * (200 * t + 2000 * t**2)) + 0.1 * np.sin(2 * np.pi * 3000 * t) + 0.02 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def multitone(sample_rate: int, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """The same band-limited sound (200 partials, 100..6000 Hz) sampled at any rate."""
    rng = np.random.default_rng(seed)
    freqs, phases, amps = rng.uniform(100, 6000, 200), rng.uniform(0, 2 * np.pi, 200), rng.uniform(0.2, 1.0, 200)
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    x = (amps[:, None] * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None])).sum(0)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def features_of(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)[None])[0].numpy()


# ---------------------------------------------------------------- front-end


def test_mel_matrix_at_44k_is_librosas_htk_unit_sum_bank() -> None:
    ours = sfx_mel_matrix(44100, 2048)
    ref = librosa.filters.mel(sr=44100, n_fft=2048, n_mels=96, fmin=0, fmax=22050, htk=True, norm=1)
    assert ours.shape == ref.shape == (96, 1025)
    np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)


def test_16k_keeps_the_44k_bands_that_fit_in_hz_and_none_is_empty() -> None:
    edges = librosa.mel_frequencies(n_mels=98, fmin=0, fmax=22050, htk=True)
    np.testing.assert_allclose(sfx_band_edges(), edges, rtol=1e-9)
    kept = sfx_bands(16000)
    assert kept == int(np.sum(edges[2:] <= 8000)) == 69 and sfx_bands(44100) == 96
    front = SfxLogMel(16000)
    assert (front.win_length, front.n_fft, front.hop, front.bands) == (743, 1024, 372, kept)
    fb16, fb44 = sfx_mel_matrix(16000, 1024), sfx_mel_matrix(44100, 2048)[:kept]
    assert np.all(fb16.max(axis=1) > 0)
    np.testing.assert_allclose(fb16.sum(axis=1), 1.0, rtol=1e-5)

    def centroids(fb: np.ndarray, sample_rate: int) -> np.ndarray:
        return fb @ np.linspace(0, sample_rate / 2, fb.shape[1])

    # each kept band sits where it sits at 44.1 kHz: within one 44.1 kHz bin (21.5 Hz)
    assert np.abs(centroids(fb16, 16000) - centroids(fb44, 44100)).max() < 44100 / 2048


def test_features_at_44k_match_the_reference_formula() -> None:
    x = mixture(44100)
    y = x / np.abs(x).max()  # aisfx normalises the file to peak 1
    mel = librosa.feature.melspectrogram(
        y=y,
        sr=44100,
        n_fft=2048,
        hop_length=1024,
        win_length=2048,
        window="hann",
        center=True,
        pad_mode="constant",
        power=2.0,
        n_mels=96,
        fmin=0,
        fmax=22050,
        htk=True,
        norm=1,
    )
    ref = np.log10(1e4 * mel + 1) / AISFX_MAX
    ours = features_of(SfxLogMel(44100, peak_normalise=True), x)
    assert ours.shape == ref.shape == (96, 1 + x.size // 1024)
    np.testing.assert_allclose(ours, ref, atol=2e-4, rtol=0)  # float32 conv STFT vs numpy FFT; features span 0..~1


@pytest.mark.parametrize("rate", [22050, 16000, 32000])
def test_a_sound_gives_the_44k_features_at_other_rates(rate: int) -> None:
    """Same window duration, bands in Hz and (through the gain) band levels as at 44.1 kHz. At exactly
    half the rate the features agree everywhere; elsewhere the window and hop are rounded to whole
    samples, so frames fall a little differently, and the bands where only leakage lands (below and
    above the partials) differ more: compare the bands inside the sound's 100..6000 Hz."""
    ref = features_of(SfxLogMel(44100, peak_normalise=False), multitone(44100)).mean(axis=1)
    got = features_of(SfxLogMel(rate, peak_normalise=False), multitone(rate)).mean(axis=1)
    diff = np.abs(got - ref[: got.size])
    if rate == 22050:
        assert diff.max() < 1e-3
    else:
        edges = sfx_band_edges()[: got.size + 2]
        inside = (edges[:-2] >= 100) & (edges[2:] <= 6000)
        assert inside.sum() > 50 and diff[inside].max() < 0.015 and diff[inside].mean() < 0.01


def test_peak_normalisation_removes_the_level_but_not_below_the_floor() -> None:
    front = SfxLogMel(16000, peak_normalise=True, peak_floor=1e-3)
    x = mixture(16000)
    np.testing.assert_allclose(features_of(front, 0.05 * x), features_of(front, x), atol=1e-4)
    hiss = 1e-5 * np.random.default_rng(1).standard_normal(16000).astype(np.float32)  # peak ~ -88 dBFS
    quiet = features_of(front, hiss)
    np.testing.assert_allclose(quiet, features_of(SfxLogMel(16000, peak_normalise=False), hiss / 1e-3), atol=1e-4)  # raised 1/floor
    assert quiet.mean() < features_of(front, hiss / np.abs(hiss).max()).mean() - 0.2  # not to full scale
    assert np.all(features_of(front, np.zeros(16000, np.float32)) == 0)


# ---------------------------------------------------------------- the network with aisfx's weights


@pytest.fixture(scope="module")
def aisfx_checkpoint() -> Path:
    try:
        return fetch_aisfx()
    except RuntimeError as exc:  # download failed (no network); a hash mismatch (ValueError) fails the test
        pytest.skip(f"aisfx {AISFX['version']} weights unavailable: {exc}")


@pytest.fixture(scope="module")
def aisfx_cnn2d(aisfx_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """aisfx's own ``models/cnn2d.py``, taken out of the cached wheel and loaded by file path."""
    path = tmp_path_factory.mktemp("aisfx") / "cnn2d.py"
    with zipfile.ZipFile(aisfx_wheel()) as wheel:
        path.write_bytes(wheel.read("aisfx/models/cnn2d.py"))
    spec = importlib.util.spec_from_file_location("aisfx_cnn2d", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cnn_with_aisfx_weights_matches_aisfx_embedding_net(aisfx_checkpoint: Path, aisfx_cnn2d: ModuleType) -> None:
    state = load_aisfx_state(aisfx_checkpoint)
    reference = aisfx_cnn2d.EmbeddingNet("max", 3, 1, 64).eval()  # X-Sequential-CE, as aisfx.inference builds it
    reference.load_state_dict(state)
    stream = PretrainedStream(ModelConfig(labels=["a"], sample_rate=44100)).eval()
    stream.load_aisfx(state)
    waveform = torch.from_numpy(np.stack([mixture(44100, 2.3, seed) for seed in range(2)]))
    with torch.no_grad():
        inputs = stream.features(waveform).transpose(1, 2)  # [B, 100 frames, 96 bands]: aisfx's 2.3 s block
        want = reference(inputs)
        out = stream(Features(waveform, torch.empty(0), torch.empty(0)))
    assert want.shape == out.teacher.shape == (2, AISFX_DIM)
    assert (out.teacher - want).abs().max() < 1e-4 * max(1.0, float(want.abs().max()))
    assert out.pooled.shape == (2, EMBED_DIM) and out.frames.shape == (2, 100 // 8, EMBED_DIM)


def test_a_model_trained_from_scratch_starts_from_the_aisfx_weights(aisfx_checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path,labels\n")
    config = TrainConfig.model_validate(
        {
            "data": {"type": "manifest", "path": str(tmp_path / "m.csv")},
            "output": str(tmp_path / "out"),
            "model": {"streams": ["e2e", "pretrained"], "layers": 1},
            "schedule": {"type": "staged", "stream_epochs": 1},
            "epochs": 2,
        }
    )
    cnn = build_model(config, ["a", "b"]).streams["pretrained"].cnn.state_dict()
    assert all(torch.equal(cnn[k], v) for k, v in load_aisfx_state(aisfx_checkpoint).items())


def test_load_aisfx_names_missing_and_unexpected_keys() -> None:
    stream = PretrainedStream(ModelConfig(labels=["a"]))
    state = dict(stream.cnn.state_dict())
    state["conv_block5.conv1.weight"] = state.pop("conv_block4.conv2.weight")
    with pytest.raises(ValueError, match=r"missing \['conv_block4.conv2.weight'\], unexpected \['conv_block5.conv1.weight'\]"):
        stream.load_aisfx(state)


# ---------------------------------------------------------------- fetching


def test_a_checkpoint_with_the_wrong_hash_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / f"aisfx-{AISFX['version']}" / "checkpoint.pth"
    bogus.parent.mkdir()
    bogus.write_bytes(b"not the weights")
    with pytest.raises(ValueError, match=f"{bogus}.*SHA-256 [0-9a-f]{{64}}, expected {AISFX['sha256']}"):
        fetch_aisfx(tmp_path)


def test_a_wheel_with_the_wrong_checkpoint_leaves_nothing_behind(tmp_path: Path) -> None:
    wheel = tmp_path / f"aisfx-{AISFX['version']}-py2.py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(AISFX["file"], b"tampered")
    with pytest.raises(ValueError, match=f"{wheel.name}.*expected {AISFX['sha256']}"):
        fetch_aisfx(tmp_path)
    assert not list((tmp_path / f"aisfx-{AISFX['version']}").iterdir())


# ---------------------------------------------------------------- freezing


def clips(batch: int, seconds: float = 1.0) -> torch.Tensor:
    return torch.from_numpy(np.stack([mixture(16000, seconds, seed) for seed in range(batch)]))


def bn_statistics(stream: PretrainedStream) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in stream.cnn.state_dict().items() if "running" in k}


@pytest.mark.parametrize(("trainable", "trained_blocks"), [("frozen", ()), ("last", ("conv_block4",)), ("all", BLOCKS)])
def test_trainable_decides_which_blocks_learn_and_keep_batchnorm_statistics(trainable: str, trained_blocks: tuple[str, ...]) -> None:
    torch.manual_seed(0)
    stream = PretrainedStream(ModelConfig(labels=["a"]), trainable=trainable)
    stream.requires_grad_(True)  # what a training stage does to the whole model ...
    stream.train()  # ... and train() freezes the fixed blocks again
    before = bn_statistics(stream)
    out = stream(Features(clips(2), torch.empty(0), torch.empty(0)))
    (out.pooled.square().mean() + out.frames.square().mean()).backward()
    after = bn_statistics(stream)
    for block in BLOCKS:
        params = list(getattr(stream.cnn, block).parameters())
        learns = block in trained_blocks
        assert all(p.requires_grad == learns and (p.grad is not None) == learns for p in params), block
        moved = any(not torch.equal(before[k], after[k]) for k in before if k.startswith(block))
        assert moved == learns, block
    assert all(p.grad is not None for p in stream.project.parameters())


def test_training_stages_keep_the_frozen_cnn_frozen() -> None:
    model = FusedTagger(ModelConfig(labels=["a", "b"], streams=["e2e", "pretrained"], layers=1))
    set_stage(model, SimpleNamespace(frozen=False))
    cnn = model.streams["pretrained"].cnn
    assert not any(p.requires_grad for p in cnn.parameters())
    assert not any(m.training for m in cnn.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert all(p.requires_grad for p in model.streams["e2e"].parameters()) and model.streams["e2e"].training


def test_probe_head_adds_a_fixed_linear_probe_of_the_raw_embedding_to_the_fused_logits() -> None:
    with pytest.raises(ValueError, match="probe_head needs the pretrained stream"):
        ModelConfig(labels=["a"], streams=["e2e"], probe_head=True)
    torch.manual_seed(0)
    model = FusedTagger(ModelConfig(labels=["a", "b"], streams=["e2e", "pretrained"], layers=1, probe_head=True)).eval()
    x = torch.from_numpy(np.stack([mixture(16000, seed=s) for s in range(3)]))
    before = model.run(x).logits  # a new head adds nothing
    weight = torch.randn(2, AISFX_DIM)
    model.probe.load_probe(torch.full((AISFX_DIM,), 0.1), torch.full((AISFX_DIM,), 2.0), weight, torch.tensor([1.0, -1.0]))
    out = model.run(x)
    expected = ((out.streams["pretrained"].teacher - 0.1) / 2.0) @ weight.T + torch.tensor([1.0, -1.0])
    torch.testing.assert_close(out.logits - before, expected, atol=1e-4, rtol=1e-4)
    set_stage(model, SimpleNamespace(frozen=False))
    assert not any(p.requires_grad for p in model.probe.parameters())  # training keeps the fitted probe


def test_the_model_package_imports_neither_librosa_nor_training_code() -> None:
    code = "import sys, rtaudio.model.fused; print(sorted(m for m in sys.modules if m == 'librosa' or m.startswith('rtaudio.train')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# ---------------------------------------------------------------- export


def test_two_stream_model_exports_and_onnx_runtime_matches_torch() -> None:
    torch.manual_seed(0)
    model = FusedTagger(ModelConfig(labels=["a", "b", "c"], streams=["e2e", "pretrained"], layers=1, probe_head=True)).eval()
    model.probe.linear.weight.data.normal_(0, 0.05)  # a probe head in the graph too
    samples = model.config.sample_rate
    proto = build_graph(model, samples)
    assert check_model(proto).ok
    assert not {node.op_type for node in proto.graph.node} & {"STFT", "DFT"}
    g = np.random.default_rng(0)
    windows = np.concatenate(
        [
            synthetic_windows(16000, samples, count=4)[0],  # a scene, full scale, digital silence
            (0.3 * g.standard_normal((2, samples))).astype(np.float32),
        ]
    )
    parity = onnx_parity(model, proto.SerializeToString(), windows, batches=(1, 3))
    assert parity.scores <= SCORE_ATOL and parity.embedding <= SCORE_ATOL, parity.summary()
