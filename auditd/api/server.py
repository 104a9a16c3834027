"""Serving the app with uvicorn in a background thread of the daemon."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn


class HTTPServer:
    def __init__(self, app, host: str, port: int):
        if port == 0:  # pick a free port up front so callers can print the address
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.host, self.port = host, port
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        # The daemon owns signals: older uvicorn installs handlers unless told not to (newer ones leave
        # them alone off the main thread, and have no such attribute).
        self.server.install_signal_handlers = lambda: None  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.run, name="http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> HTTPServer:
        self.thread.start()
        deadline = time.time() + timeout
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"HTTP server did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
