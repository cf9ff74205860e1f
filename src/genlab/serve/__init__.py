"""`genlab serve`: trained runs behind an HTTP API with dynamic batching and streaming, a browser
page, and Prometheus metrics. See docs/serving.md."""

from genlab.serve.app import create_app
from genlab.serve.protocol import uvicorn_options
from genlab.serve.schemas import Settings

__all__ = ["create_app", "Settings", "uvicorn_options"]
