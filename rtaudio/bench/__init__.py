"""``rtaudio bench``: how fast the model runs and how many streams this machine can serve.

- ``engine``: windows/s and ms per batch of every usable backend at batch 1, 2, 4, ... max;
- ``capacity``: the most real-time streams the whole runtime sustains without dropping a
  window, and the capture-to-publish latency at that load;
- ``yardsticks``: two well-known architectures (YAMNet's MobileNetV1, an EfficientAT-mn10-like
  MobileNetV3) timed in the same run, so the model's cost reads as a ratio;
- ``suite`` runs them and ``report`` writes the table and the JSON.

Importing this package imports nothing heavy; torch is needed only for the yardsticks.
"""
