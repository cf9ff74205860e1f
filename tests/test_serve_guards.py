"""The outermost guard on its own: a failing route is one 500, a response that cannot be sent is one log line."""

import asyncio
import logging

import pytest

from genlab.serve.guards import Failures


def run(app, send):
    async def receive():
        return {"type": "http.request", "body": b""}

    asyncio.run(Failures(app)({"type": "http", "method": "POST", "path": "/x"}, receive, send))


def test_a_failing_route_gets_one_json_500():
    sent = []

    async def app(scope, receive, send):
        raise KeyError("boom")

    async def send(message):
        sent.append(message)

    run(app, send)
    assert sent[0]["status"] == 500 and b"KeyError" in sent[1]["body"]


def test_a_response_the_connection_cannot_take_is_one_log_line_not_a_traceback(caplog):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 421, "headers": []})

    async def send(message):  # what h11 raises when the client already broke the connection
        raise RuntimeError("can't handle event type Response when role=SERVER and state=MUST_CLOSE")

    with caplog.at_level(logging.INFO, logger="genlab.serve"):
        run(app, send)
    assert "connection closed before the response could be sent" in caplog.text
    assert "Traceback" not in caplog.text


def test_an_error_after_the_response_started_still_closes_the_connection():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise ValueError("mid-stream")

    async def send(message):
        pass

    with pytest.raises(ValueError, match="mid-stream"):
        run(app, send)
