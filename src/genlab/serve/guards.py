"""Guard rails that sit in front of every route: one JSON 500 for an unhandled error, the Host check,
bearer-token auth and a request body size limit. All are plain ASGI middleware, so streaming
responses pass through untouched."""

from __future__ import annotations

import hmac
import json
import logging
import re
import traceback
from urllib.parse import parse_qs, quote, unquote

from starlette.requests import cookie_parser

from genlab.serve.schemas import printable

COOKIE = "genlab_token"  # + the port: cookies on one host are shared by every port
OPEN_PATHS = ("/healthz",)
LOOPBACK = ("127.0.0.1", "[::1]", "localhost")
WILDCARD = ("0.0.0.0", "[::]", "")
HOST_HEADER = re.compile(r"(\[[0-9a-f:.]+\]|[^:\[\]]+)(?::\d*)?")  # name or [v6], optional port
log = logging.getLogger("genlab.serve")


async def _reply(send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class Failures:
    """Outermost but for the metrics: an exception no route handled becomes one JSON 500 (logged), and
    the connection stays usable. (Starlette's own handler sends its 500 and re-raises, and uvicorn then
    drops the keep-alive connection, so the client's next request on it fails.) Once a response has
    started, only closing the connection can end it, so the error goes on to uvicorn. A response that
    cannot be sent at all (the client sent garbage after its request, or left) is one log line: the
    connection is already gone, and there is nobody to answer."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, unsendable = False, False

        async def watch(message):
            nonlocal started, unsendable
            started = started or message["type"] == "http.response.start"
            try:
                await send(message)
            except Exception:
                unsendable = True
                raise

        try:
            await self.app(scope, receive, watch)
        except Exception as e:  # noqa: BLE001 - a failed request, never a dead server or connection
            if unsendable:
                log.info("%s %s: the connection closed before the response could be sent (%s: %s)",
                         scope["method"], scope["path"], type(e).__name__, e)
                return
            log.error("%s %s failed:\n%s", scope["method"], scope["path"], traceback.format_exc())
            if started:
                raise
            await _reply(send, 500, printable(f"internal error: {type(e).__name__}: {e}"))


def _bracketed(host: str) -> str:
    """A host as it appears in a Host header: lower case, an IPv6 address in brackets."""
    host = host.lower().strip("[]")
    return f"[{host}]" if ":" in host else host


class HostCheck:
    """Answers only requests whose Host names this server, so a web page cannot reach a server on
    127.0.0.1 by pointing its own DNS name there (DNS rebinding). Allowed: the bound host (for a
    loopback bind, every loopback name; for 0.0.0.0 or ::, the address the connection came in on),
    with any port, plus `allow` ("*": any). /healthz and requests without a Host stay open."""

    def __init__(self, app, host: str, allow: tuple[str, ...]):
        self.app, self.bound, self.allow = app, _bracketed(host), {_bracketed(h) for h in allow}
        self.names = set(LOOPBACK) if self.bound in LOOPBACK else {self.bound}

    def allowed(self, scope) -> set[str]:
        names = self.names | self.allow
        if self.bound in WILDCARD and scope.get("server"):
            local = _bracketed(scope["server"][0])
            names |= set(LOOPBACK) if local in LOOPBACK else {local}
        return names

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or "*" in self.allow or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        header = dict(scope["headers"]).get(b"host")
        if header is None:
            return await self.app(scope, receive, send)
        value = header.decode("latin-1").strip()
        match = HOST_HEADER.fullmatch(value.lower())
        names = self.allowed(scope)
        if match and match.group(1) in names:
            return await self.app(scope, receive, send)
        await _reply(send, 421, f"Host {value!r} is not a name this server answers to (allowed: "
                                f"{', '.join(sorted(names))}, with any port); to allow more, start genlab serve "
                                f"with --allow-host NAME (repeatable; '*' allows any)")


class TokenAuth:
    """With a token, every path but /healthz needs `Authorization: Bearer TOKEN`, or the same-site
    cookie that opening the page as `/?token=TOKEN` sets (a browser cannot add headers to a page load)."""

    def __init__(self, app, token: str | None):
        self.app, self.token = app, token

    def _ok(self, candidate: bytes | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate, self.token.encode("utf-8"))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.token or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        auth = headers.get("authorization", "")
        bearer = auth[7:].strip().encode("latin-1") if auth.lower().startswith("bearer ") else None  # raw bytes
        name = f"{COOKIE}_{(scope.get('server') or ('', 0))[1]}"
        from_cookie = cookie_parser(headers.get("cookie", "")).get(name)
        if self._ok(bearer) or self._ok(None if from_cookie is None else unquote(from_cookie).encode("utf-8")):
            return await self.app(scope, receive, send)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
        if scope["path"] == "/" and query is not None and self._ok(query.encode("utf-8")):  # the page link
            cookie = f"{name}={quote(self.token, safe='')}; Path=/; HttpOnly; SameSite=Strict"

            async def send_with_cookie(message):
                if message["type"] == "http.response.start":
                    message["headers"] = [*message["headers"], (b"set-cookie", cookie.encode("latin-1"))]
                await send(message)
            return await self.app(scope, receive, send_with_cookie)
        await _reply(send, 401, "missing or wrong token: send the header 'Authorization: Bearer <token>' "
                                "(the browser page: open /?token=<token>)", [(b"www-authenticate", b"Bearer")])


class BodyLimit:
    """Reads the body first and refuses one over `limit` bytes with 413, whether or not it declared
    its length; the app then gets the body replayed, and later messages (disconnects) pass through."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        too_big = f"request body over {self.limit} bytes (the server's --max-body)"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _reply(send, 413, too_big)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left (or was cut off by --read-timeout)
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await _reply(send, 413, too_big)
            if not message.get("more_body"):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
