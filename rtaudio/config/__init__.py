"""Configuration: one YAML loader and error reporter (``loader``) for the site and training files,
the bases every plugin's config class extends (``base``), the site schema (``site``) and the
checks of a site against its model (``check``).

Each source and engine keeps its config class beside its code (``runtime/sources/rtp.py`` holds
``RtpConfig``); ``site`` gathers them from the plugin registries, so adding a plugin touches one
file. This package's ``__init__`` imports nothing, so plugins can import ``config.base`` freely.
"""
