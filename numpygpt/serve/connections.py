"""A time limit on a request's headers, which uvicorn does not have: a client that opens a
connection and sends its headers slowly, or never finishes them, holds the connection (and its
memory) until it is closed. Here each connection gets `HEADER_TIMEOUT_S` to send its first
request's headers; after that the server closes it. (A connection idle between requests is
closed by uvicorn's own keep-alive timeout.)"""
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 10.0


class HeadersInTime(H11Protocol):
    """uvicorn's HTTP/1.1 protocol (h11), closing connections whose first headers are late."""

    header_timeout_s = HEADER_TIMEOUT_S

    def connection_made(self, transport):
        super().connection_made(transport)
        self.header_timer = self.loop.call_later(self.header_timeout_s, self.close_if_no_request)

    def close_if_no_request(self):
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()

    def handle_events(self):
        super().handle_events()
        if self.cycle is not None and self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def connection_lost(self, exc):
        if self.header_timer is not None:
            self.header_timer.cancel()
        super().connection_lost(exc)
