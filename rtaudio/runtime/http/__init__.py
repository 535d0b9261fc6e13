"""The site's HTTP server (``server.py``), its Prometheus collector (``metrics.py``) and the status page (``status.py``, ``page.html``)."""

from rtaudio.runtime.http.server import HttpServer

__all__ = ["HttpServer"]
