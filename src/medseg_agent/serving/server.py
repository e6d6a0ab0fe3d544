"""Running the app on uvicorn: in the foreground (``medseg-agent serve``) or in a background thread
(tests, benchmarks, notebooks that want a real server on a free local port)."""

from __future__ import annotations

import threading
import time
from types import TracebackType

import uvicorn
from fastapi import FastAPI


def run_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8265, log_level: str = "info",
               access_log: bool = False) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM shut down cleanly)."""
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log, timeout_keep_alive=30)


class BackgroundServer:
    """A real uvicorn server in a daemon thread; ``port=0`` picks a free port.

    >>> with BackgroundServer(create_app(tool)) as server:  # doctest: +SKIP
    ...     tool = build_tool(server.url)
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                 startup_timeout_s: float = 60.0) -> None:
        self.app = app
        self.host = host
        self.startup_timeout_s = startup_timeout_s
        config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                                timeout_keep_alive=30)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="medseg-server", daemon=True)
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the server thread exited during startup (is {self.host}:{self.port} in use?)")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not start within {self.startup_timeout_s:g} s")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
