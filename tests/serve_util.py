"""A real genlab server on 127.0.0.1 for tests: uvicorn in a background thread on a free port."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import httpx
import uvicorn

from genlab.serve.app import create_app
from genlab.serve.protocol import uvicorn_options
from genlab.serve.schemas import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(run_dirs, *, ready: bool = True, **settings):
    """Start a server for `run_dirs` with Settings(**settings); yield its base URL once /readyz says
    every model is loaded (or at once with ready=False); stop it on exit."""
    settings = Settings(**settings)
    app = create_app(list(run_dirs), settings, device="cpu")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=2, **uvicorn_options(settings)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if not ready and httpx.get(base + "/healthz").status_code == 200:
                break
            if ready and httpx.get(base + "/readyz", headers=headers).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    else:
        server.should_exit = True
        raise RuntimeError(f"the test server on {base} did not become ready")
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def ready_client(run_dirs):
    """An in-process client (fastapi's TestClient) of an app serving `run_dirs`, once /readyz says all are loaded."""
    from fastapi.testclient import TestClient

    with TestClient(create_app(list(run_dirs)), base_url="http://127.0.0.1") as client:
        deadline = time.time() + 30
        while client.get("/readyz").status_code != 200:
            if time.time() > deadline:
                raise RuntimeError(f"the app serving {run_dirs} did not become ready: {client.get('/readyz').json()}")
            time.sleep(0.05)
        yield client
