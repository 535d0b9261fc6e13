"""The training side: synthetic data, models and export (needs the ``train`` extras for torch)."""
