"""Real model windows for export checks: synthetic building scenes cut like the runtime cuts them.

Parity and the FP16-safety pass run on these rather than on noise, so the front-end sees the
level range a site produces: quiet room tone, events at 3..25 dB SNR, a window scaled to a
0 dBFS peak (a clipping microphone) and digital silence (a muted input, an RTP gap).
"""

from __future__ import annotations

import numpy as np

# sounds rendered by numpy alone (no espeak-ng or fluidsynth), so every machine gets the same windows
SCENE_LABELS = (
    "smoke_alarm",
    "co_alarm",
    "doorbell",
    "knock",
    "glass_break",
    "dog_bark",
    "footsteps",
    "water_running",
    "hvac_hum",
    "siren",
    "phone_ring",
    "door_slam",
    "vacuum_cleaner",
    "typing",
)


def synthetic_windows(sample_rate: int, samples: int, count: int = 16, seed: int = 0) -> tuple[np.ndarray, str]:
    """``count`` (>= 3) float32 windows ``[count, samples]`` and a one-line description of them."""
    from rtaudio.train.synth import make_scene

    if count < 3:
        raise ValueError(f"count {count} too small: need at least 3 windows (scene, full scale, silence)")
    rng = np.random.default_rng(seed)
    hop = samples // 2
    scenes = count - 2
    audio, _ = make_scene(rng, (samples + hop * (scenes - 1)) / sample_rate + 0.1, labels=SCENE_LABELS, sample_rate=sample_rate)
    windows = [audio[i * hop : i * hop + samples] for i in range(scenes)]
    loudest = windows[int(np.argmax([np.abs(w).max() for w in windows]))]
    windows += [loudest / (np.abs(loudest).max() + 1e-12), np.zeros(samples)]
    description = (
        f"{count} windows of {samples} samples at {sample_rate} Hz: {scenes} from a synthetic scene "
        f"(make_scene seed {seed}), the loudest scaled to 0 dBFS peak, and digital silence"
    )
    return np.stack(windows).astype(np.float32), description
