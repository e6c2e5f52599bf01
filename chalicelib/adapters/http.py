"""POSTs one signed delivery to a subscriber, refusing to be turned against internal services.

SSRF stance (second line; the first is ``domain.events.check_subscriber_url`` at creation):
the host name is resolved here, every address it resolves to must be public
(``address_allowed``; loopback only with STAGETRACK_ALLOW_LOCAL_SUBSCRIBERS), and the
connection goes to the address that was checked (so DNS cannot answer differently between the
check and the connect). TLS still verifies the certificate against the host name. Redirects
are not followed (a 3xx is a failed attempt), the response body is read only up to 64 KiB
and thrown away, and every attempt has a timeout.
"""
from __future__ import annotations

import http.client
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..domain.events import address_allowed

MAX_RESPONSE_BYTES = 64 * 1024
USER_AGENT = "stagetrack-webhooks/1"


@dataclass(frozen=True)
class HttpResult:
    status: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        self._tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self._tls)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


class WebhookSender:
    def __init__(self, timeout: float = 5.0, allow_local: bool = False) -> None:
        self.timeout = timeout
        self.allow_local = allow_local

    def _address(self, host: str, port: int) -> str:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        # IPv4/IPv6 socket addresses start with the host as a str (other families: not one we dial)
        addresses = [host for *_, (host, *_) in infos if isinstance(host, str)]
        refused = [a for a in addresses if not address_allowed(a, allow_local=self.allow_local)]
        if not addresses or refused:
            raise PermissionError(f"{host} resolves to a non-public address; not delivering")
        return addresses[0]

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> HttpResult:
        started = time.monotonic()
        parts = urlsplit(url)
        https = parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection = None
        try:
            address = self._address(parts.hostname or "", port)
            connection_class = _PinnedHTTPSConnection if https else _PinnedHTTPConnection
            connection = connection_class(parts.hostname or "", port, address, self.timeout)
            connection.request("POST", path, body=body, headers={"User-Agent": USER_AGENT, **headers})
            response = connection.getresponse()
            response.read(MAX_RESPONSE_BYTES)
            status, error = response.status, None
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except PermissionError as refused:
            status, error = None, str(refused)
        except (OSError, http.client.HTTPException) as failure:  # refused, reset, timeout, TLS
            status, error = None, f"{type(failure).__name__}: {failure}"[:300]
        finally:
            if connection is not None:
                connection.close()
        return HttpResult(status=status, error=error, duration_ms=int((time.monotonic() - started) * 1000))
