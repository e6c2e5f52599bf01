"""Local hygiene (issue 10, item 8): DynamoDB Local listens on 127.0.0.1 only, and the local
server's access log does not print query strings."""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import pytest


def listening_addresses(port: int) -> list[ipaddress._BaseAddress]:
    """Local addresses of the TCP sockets in LISTEN state on ``port`` (from /proc/net/tcp{,6})."""
    found = []
    for table, size in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        with open(table) as lines:
            next(lines)
            for line in lines:
                local, state = line.split()[1], line.split()[3]
                address, _, hex_port = local.partition(":")
                if state != "0A" or int(hex_port, 16) != port:
                    continue
                raw = bytes.fromhex(address)
                # the kernel prints each 32-bit word in host (little-endian) order
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, size, 4))
                found.append(ipaddress.ip_address(raw))
    return found


def is_loopback(address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def other_local_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent for UDP connect
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if ipaddress.ip_address(address).is_loopback else address


@pytest.mark.ddb_local
def test_dynamodb_local_listens_on_loopback_only(ddb_local_endpoint):
    port = urlsplit(ddb_local_endpoint).port
    addresses = listening_addresses(port)
    assert addresses, "DynamoDB Local is not listening?"
    assert all(is_loopback(a) for a in addresses), addresses
    other = other_local_address()
    if other is not None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            assert s.connect_ex((other, port)) != 0  # refused on the machine's own LAN address
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_the_proc_reader_sees_a_wildcard_listener():
    """The check above can fail: a socket on every interface is reported as such."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        assert [str(a) for a in listening_addresses(port)] == ["0.0.0.0"]


# ---- chalice local's access log ----------------------------------------------------------------

def test_without_query_keeps_the_path_and_drops_every_query():
    from tools.local_access_log import without_query

    assert without_query('"GET /api/runs?pipeline=web&token=st_abc HTTP/1.1" 200 -') == \
        '"GET /api/runs?[REDACTED] HTTP/1.1" 200 -'
    assert without_query("code 400, message Bad request syntax ('GET /x?password=p HTTP/9')") == \
        "code 400, message Bad request syntax ('GET /x?[REDACTED] HTTP/9')"
    assert (
        without_query('"GET /api/stages/web:1:1 HTTP/1.1" 200 -')
        == '"GET /api/stages/web:1:1 HTTP/1.1" 200 -'
    )


def test_chalice_local_as_make_run_starts_it_prints_no_query_string(start_chalice_local):
    """The real server, started with run_local's command: its stderr access log has paths only."""
    import requests

    secret = "st_" + "Q" * 43
    with start_chalice_local() as (base, log_path):
        requests.get(f"{base}/api/runs?pipeline=web&access_token={secret}", timeout=10)
        requests.get(f"{base}/nowhere?password=hunter2-{secret}", timeout=10)
        with socket.create_connection(("127.0.0.1", urlsplit(base).port), timeout=5) as raw:
            raw.sendall(f"GET /x?token={secret} HTTP/9.9\r\n\r\n".encode())
            raw.recv(4096)
    out = log_path.read_text()
    assert '"GET /api/runs?[REDACTED] HTTP/1.1"' in out and '"GET /nowhere?[REDACTED] HTTP/1.1"' in out
    assert (
        secret not in out and secret[3:20] not in out and "hunter2" not in out and "pipeline=web" not in out
    )
