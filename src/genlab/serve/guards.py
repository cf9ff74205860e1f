"""Guard rails that sit in front of every route: bearer-token auth and a request body size limit.
Both are plain ASGI middleware, so streaming responses pass through untouched."""

from __future__ import annotations

import hmac
import json
from urllib.parse import parse_qs, quote, unquote

from starlette.requests import cookie_parser

COOKIE = "genlab_token"  # + the port: cookies on one host are shared by every port
OPEN_PATHS = ("/healthz",)


async def _reply(send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


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
            if message["type"] != "http.request":
                break
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
