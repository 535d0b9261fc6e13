"""Real-audio corpora built from registry packages (training side only)."""
