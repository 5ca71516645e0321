"""A server on this machine's loopback for as long as a benchmark or a test needs it: the app on 127.0.0.1 (a free
port) in a thread, stopped together with its engine."""

from __future__ import annotations

import threading
import time


class LocalServer:
    def __init__(self, ckpt: str, **settings) -> None:
        import uvicorn

        from multitoken.serve.server import build_server

        self.app, self.engine = build_server(str(ckpt), **settings)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                self.engine.stop()
                raise RuntimeError("the local server did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.engine.stop()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
