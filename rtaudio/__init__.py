"""rtaudio: an edge audio tagger for buildings."""

__version__ = "0.1.0"
