"""The limits the HTTP protocol enforces on each connection (``web.http_protocol``).

They live with the settings they come from, so the protocol imports them from
here and the settings never import the web layer. Every field is supplied by
``Settings.connection_limits``; the defaults are the table's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConnectionLimits:
    """What one worker allows a connection, from the settings of the same names."""

    #: MAX_REQUEST_HEAD_BYTES: most bytes of request line and headers.
    max_head_bytes: int
    #: HEAD_TIMEOUT: seconds to send a whole request head.
    head_timeout: float
    #: BODY_TIMEOUT: seconds a body may stall between two chunks.
    body_timeout: float
    #: BODY_DEADLINE: seconds a whole body may take from the end of its head.
    body_deadline: float
    #: SEND_TIMEOUT: seconds a response may wait, unread, on a full send buffer.
    send_timeout: float
    #: MAX_CONNECTIONS: open connections per worker.
    max_connections: int
    #: MAX_CONNECTIONS_PER_CLIENT: open connections per client address per worker; 0: no cap.
    max_connections_per_client: int
    #: TRUSTED_PROXIES: peers not capped per address (their clients share their address).
    uncapped_peers: tuple[str, ...]
