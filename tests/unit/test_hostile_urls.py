"""Subscriber URLs: IPv6 forms that embed a private IPv4 are refused at creation and at delivery
(issue 10, item 6)."""
from __future__ import annotations

import socket

import pytest

from chalicelib.adapters import http as http_adapter
from chalicelib.adapters.http import WebhookSender
from chalicelib.domain.errors import ValidationFailed
from chalicelib.domain.events import address_allowed, check_subscriber_url

# Each embeds 127.0.0.1, 10.0.0.1, 169.254.169.254 or 192.168.1.1 in a different IPv6 form.
EMBEDDING_PRIVATE = [
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:a9fe:a9fe",      # IPv4-mapped
    "::127.0.0.1", "::10.0.0.1", "::169.254.169.254", "::8.8.8.8",  # IPv4-compatible (deprecated)
    "64:ff9b::127.0.0.1", "64:ff9b::a00:1", "64:ff9b::169.254.169.254",  # NAT64 well-known prefix
    "64:ff9b:1::a00:1", "64:ff9b:1:0:0:0:808:808",                  # NAT64 local-use prefix
    "2002:7f00:1::1", "2002:a00:1::", "2002:a9fe:a9fe::1", "2002:c0a8:101::1",  # 6to4
    "2001:0:4136:e378:8000:63bf:80ff:fffe",                         # Teredo, client 127.0.0.1
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",                         # Teredo, client 10.0.0.1
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",                         # Teredo, client 8.8.8.8
]
PUBLIC = ["8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"]


@pytest.mark.parametrize("address", EMBEDDING_PRIVATE)
def test_embedded_private_ipv4_is_refused_at_delivery(address):
    assert not address_allowed(address, allow_local=False)
    assert not address_allowed(address, allow_local=True)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address):
    assert address_allowed(address, allow_local=False)


def test_loopback_stays_a_local_only_choice():
    assert address_allowed("::1", allow_local=True) and address_allowed("127.0.0.1", allow_local=True)
    assert not address_allowed("::1", allow_local=False) and not address_allowed("::", allow_local=True)
    assert check_subscriber_url("http://[::1]:9999/x", allow_local=True)


@pytest.mark.parametrize("address", EMBEDDING_PRIVATE)
def test_embedded_private_ipv4_literal_is_refused_at_creation(address):
    for allow_local in (False, True):
        with pytest.raises(ValidationFailed):
            check_subscriber_url(f"https://[{address}]/hook", allow_local=allow_local)


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "127.1", "0177.0.0.1", "10.1", "0x0a.0.0.1",
                                  "1.2.3.4.5", "fe80::1%25eth0"])
def test_legacy_ipv4_spellings_and_zone_ids_are_refused_at_creation(host):
    host = f"[{host}]" if ":" in host else host
    with pytest.raises(ValidationFailed):
        check_subscriber_url(f"https://{host}/hook", allow_local=False)


@pytest.mark.parametrize("address", EMBEDDING_PRIVATE)
def test_sender_checks_every_resolved_address_and_never_connects(monkeypatch, address):
    """A host name that resolves (now, not at creation) to an embedding address is refused."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    infos = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 443)),
             (family, socket.SOCK_STREAM, 6, "", (address, 443, 0, 0))]
    connects = []
    monkeypatch.setattr(http_adapter.socket, "getaddrinfo", lambda *a, **k: infos)
    monkeypatch.setattr(http_adapter.socket, "create_connection", lambda *a, **k: connects.append(a))
    result = WebhookSender(timeout=1, allow_local=True).post("https://hooks.example.com/x", b"{}", {})
    assert result.status is None and "non-public address" in result.error
    assert connects == []
