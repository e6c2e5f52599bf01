"""`chalice local`'s access log without query strings.

chalice local serves with http.server, whose access log prints the whole request line
(``"GET /api/runs?pipeline=web&token=... HTTP/1.1" 200 -``) to stderr, and whose error lines
quote a malformed request line. A credential sent as a query parameter (a mistake, but one
clients make, and webhook senders that put a token in the URL) would land in the terminal and in
any file the output is sent to. ``install()`` makes every line that handler writes show the
path only: a query string becomes ``?[REDACTED]``. The service's own JSON request log
(chalicelib/api) never logs query strings either.
"""
from __future__ import annotations

import re

REDACTED = "[REDACTED]"
_QUERY = re.compile(r"\?[^\s'\"]*")


def without_query(text: str) -> str:
    """Every ``?query`` in ``text`` (up to a space or quote) replaced by ``?[REDACTED]``."""
    return _QUERY.sub(f"?{REDACTED}", text)


def install() -> None:
    """Patch chalice local's request handler (call before ``chalice local`` starts serving)."""
    from chalice.local import ChaliceRequestHandler

    if getattr(ChaliceRequestHandler, "_stagetrack_without_query", False):
        return
    original = ChaliceRequestHandler.log_message

    def log_message(self, format: str, *args) -> None:
        original(self, "%s", without_query(format % args))

    ChaliceRequestHandler.log_message = log_message
    ChaliceRequestHandler._stagetrack_without_query = True
