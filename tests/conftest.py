"""Shared fixtures. The plain helpers they are built on (ports, waiting, ``Broker``, ``Subscriber``,
audio files and sinks...) live in ``tests/helpers.py``, which test modules import.

``mosquitto`` is a started default broker (anonymous, no persistence). ``make_mosquitto``
builds others (TLS listener, users, persistence). A ``Broker`` can be stopped and started
again on the SAME port, to test reconnects. ``tiny_model`` is the hand-built model of
``tests/tinymodel.py``, one per test module. Tests marked ``needs_gpu`` skip unless TensorRT
and a CUDA GPU are here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rtaudio.contract import ModelDir
from tests.helpers import Broker, Subscriber
from tests.tinymodel import make_tiny_model


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``needs_gpu`` tests run only where TensorRT, cuda-python and a CUDA GPU all are (select them
    with ``-m needs_gpu``); elsewhere they skip, saying which is missing. Probed once, and only when
    such a test was collected."""
    marked = [item for item in items if item.get_closest_marker("needs_gpu")]
    if not marked:
        return
    from rtaudio.tensorrt.cuda import CudaError, NvidiaUnavailable, tensorrt_and_gpu

    try:
        tensorrt_and_gpu()
    except (NvidiaUnavailable, CudaError) as exc:
        skip = pytest.mark.skip(reason=f"needs TensorRT and a CUDA GPU: {exc}")
        for item in marked:
            item.add_marker(skip)


@pytest.fixture
def make_mosquitto(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Factory of started brokers (keyword arguments as ``Broker``); all stopped at teardown."""
    brokers: list[Broker] = []

    def make(**kwargs: object) -> Broker:
        broker = Broker(tmp_path / f"mosquitto-{len(brokers)}", **kwargs)  # type: ignore[arg-type]
        brokers.append(broker)
        return broker.start()

    yield make
    for broker in brokers:
        broker.stop()


@pytest.fixture
def mosquitto(make_mosquitto: Callable[..., Broker]) -> Broker:
    """A started anonymous mosquitto on a free 127.0.0.1 port."""
    return make_mosquitto()


@pytest.fixture
def make_subscriber() -> Iterator[Callable[..., Subscriber]]:
    """Factory of connected, subscribed ``Subscriber``s; all closed at teardown."""
    subscribers: list[Subscriber] = []

    def make(broker: object, topic: str = "#", **kwargs: object) -> Subscriber:
        subscriber = Subscriber(broker, topic, **kwargs)  # type: ignore[arg-type]
        subscribers.append(subscriber)
        return subscriber

    yield make
    for subscriber in subscribers:
        subscriber.close()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> ModelDir:
    """The tiny ONNX model (tests/tinymodel.py), built once per test module."""
    return make_tiny_model(tmp_path_factory.mktemp("m") / "tiny")


@pytest.fixture(scope="module")
def tiny_torch_model(tmp_path_factory: pytest.TempPathFactory) -> ModelDir:
    """``tiny_model`` with its equivalent TorchScript ``model.pt``, for the torch engine."""
    return make_tiny_model(tmp_path_factory.mktemp("m") / "tiny", with_torch=True)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and on a busy (2-core, shared) CPU competing threads
    cost seconds per call: one intra-op torch thread for the module. Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def text_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small fused model WITH caption and audio-text heads, really trained (2 streams, 2 epochs
    on 8 synthetic scenes, ~20 s on an idle CPU) and exported: what the text-head tests run against."""
    from rtaudio.train.config import TrainConfig
    from rtaudio.train.loop import train

    out = tmp_path_factory.mktemp("text_model")
    config = TrainConfig.model_validate(
        {
            "data": {
                "type": "synthetic",
                "scenes": 8,
                "duration_s": 8.0,
                "seed": 5,
                "val_fraction": 0.25,
                "test_fraction": 0.25,
                "labels": ["knock", "doorbell", "hvac_hum", "water_running", "dog_bark"],
            },
            "output": str(out),
            "model": {"streams": ["e2e", "timbre"], "layers": 1},
            "epochs": 2,
            "batch_size": 16,
            "captions": {"batch_size": 4, "tokenizer_size": 200, "max_tokens": 32},
            "model_id": "text-test",
        }
    )
    path = train(config)
    assert path is not None
    return path
