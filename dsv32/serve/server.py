"""Running the app with uvicorn: in the foreground (`dsv32 serve`) or in a background thread.

`running_server(state)` is a context manager that starts uvicorn on 127.0.0.1 and a free port in a
daemon thread, waits until it accepts connections, yields the base URL (`http://127.0.0.1:PORT`)
and shuts the server down on exit; tests, benchmarks and the demo's smoke test use it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn

from dsv32.serve.app import create_app
from dsv32.serve.state import ServerState

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def uvicorn_config(state: ServerState, host: str, port: int, log_level: str = "warning") -> uvicorn.Config:
    return uvicorn.Config(
        create_app(state),
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
    )


@contextlib.contextmanager
def running_server(
    state: ServerState, host: str = "127.0.0.1", start_timeout_s: float = 60.0
) -> Iterator[str]:
    """Serve `state` in a background thread; yield the base URL."""
    port = free_port(host)
    server = uvicorn.Server(uvicorn_config(state, host, port))
    thread = threading.Thread(target=server.run, name=f"dsv32-serve-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the server on {host}:{port} failed to start (see the log)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError(f"the server on {host}:{port} did not start within {start_timeout_s} s")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        if thread.is_alive():
            log.warning("the server thread on port %d did not stop within 10 s", port)
