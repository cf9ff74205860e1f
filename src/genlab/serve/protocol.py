"""uvicorn's HTTP/1.1 protocol (h11) with a read deadline, and the uvicorn options the server runs with.

uvicorn's keep-alive timer stops at the first byte a client sends and a fresh connection has none,
so a client that sends half a request line (or a body slower than a trickle) and waits holds its
connection forever (slowloris). Here every request must arrive whole, head and body, within
`read_timeout` seconds of the moment the server starts waiting for it (the connection opening or
the previous response ending); otherwise the connection is closed.
"""

from __future__ import annotations

import asyncio
import functools

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from genlab.serve.schemas import Settings


class ReadTimeoutH11(H11Protocol):
    def __init__(self, *args, read_timeout: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.read_timeout = read_timeout
        self.read_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._watch()

    def handle_events(self) -> None:  # on every data_received
        super().handle_events()
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc) -> None:
        self._stop()
        super().connection_lost(exc)

    def _watch(self) -> None:
        """The clock runs while the server waits on the client: for a request (nothing yet, part of its
        head or body), or for anything at all once the response is out."""
        waiting = self.conn.their_state in (h11.IDLE, h11.SEND_BODY) or self.conn.our_state is h11.DONE
        reading = waiting and not self.transport.is_closing()
        if reading and self.read_timer is None:
            self.read_timer = self.loop.call_later(self.read_timeout, self._timed_out)
        elif not reading:
            self._stop()

    def _stop(self) -> None:
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None

    def _timed_out(self) -> None:
        self.read_timer = None
        if not self.transport.is_closing():
            self.logger.info("closing a connection whose request did not arrive within %g s (--read-timeout)",
                             self.read_timeout)
            self.transport.close()


def uvicorn_options(settings: Settings) -> dict:
    """Keyword arguments for uvicorn.run / uvicorn.Config: the h11 protocol with the read deadline."""
    return {"http": functools.partial(ReadTimeoutH11, read_timeout=settings.read_timeout)}
