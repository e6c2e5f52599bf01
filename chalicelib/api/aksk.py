"""Huawei Cloud's AK/SK request signature (``SDK-HMAC-SHA256``), verified as its API gateway does.

Pure: no I/O, no chalice. The API's security layer (api/security.py) reads the Authorization
header with it (api/credentials.py) and hands the service a ``Signature``: the service looks up
the pair's SK and asks the signature whether that SK signed the request, without knowing the
format (domain/auth.py ``SignatureProof``). The pairs' own formats (``STAK...`` access keys,
``st_sk_...`` secret keys) are stagetrack's, in domain/auth.py.

Written from the behaviour of the official SDK's signer (huaweicloudsdkcore) and tested against
signatures that SDK produces (tests/unit/test_aksk.py); no code is taken from it.

A signed request carries ``X-Sdk-Date: YYYYMMDDTHHMMSSZ`` and
``Authorization: SDK-HMAC-SHA256 Access=<AK>, SignedHeaders=<a;b;c>, Signature=<hex>``, where the
signature is HMAC-SHA256, keyed with the secret key (SK), of
``SDK-HMAC-SHA256 \\n <X-Sdk-Date> \\n hex(SHA-256(canonical request))`` and the canonical request
is six lines:
1. the method, upper case;
2. the path, percent-decoded, split on "/", each segment percent-encoded again (everything but
   letters, digits and ``_.-~``), joined, with a trailing "/" added if missing;
3. the query: (name, value) pairs sorted by name then value (as text, before encoding), each
   encoded as in 2, ``name=value`` joined by "&" (a repeated name gives one pair per value);
4. each signed header as ``name:value`` (name lower case, value trimmed), one per line, and an
   empty line;
5. the signed header names joined by ";" as the Authorization header lists them;
6. hex SHA-256 of the raw body (the empty body's hash for none).

On top of the signature itself, stagetrack insists on what makes it worth having: ``host`` and
``x-sdk-date`` must be among the signed headers; the date must be within ``MAX_SKEW_SECONDS`` of
the server's clock (the replay window); the body is always hashed (a client's
``X-Sdk-Content-Sha256`` must equal the real hash: ``UNSIGNED-PAYLOAD`` is refused); signatures
are compared in constant time.
"""
from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, unquote

from ..domain.auth import Unauthorized

ALGORITHM = "SDK-HMAC-SHA256"
DATE_HEADER = "x-sdk-date"
CONTENT_HASH_HEADER = "x-sdk-content-sha256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
MAX_SKEW_SECONDS = 15 * 60  # as Huawei's gateway: a signed request is good for 15 minutes either way
REQUIRED_SIGNED = ("host", DATE_HEADER)
EMPTY_BODY_HASH = hashlib.sha256(b"").hexdigest()

_AUTHORIZATION = re.compile(
    r"^SDK-HMAC-SHA256\s+Access=([^,\s]{1,128}),\s*SignedHeaders=([^,\s]{1,1024}),\s*Signature=([0-9a-fA-F]{64})$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^`|~0-9a-z-]{1,64}$")  # lower-case RFC 9110 token
MAX_SIGNED_HEADERS = 32


class SignatureRejected(Exception):
    """The request is not signed as required; the message says why (never anything secret)."""


@dataclass(frozen=True)
class SignedAuthorization:
    """What the Authorization header says: who signed, which headers, the signature."""

    access_key: str
    signed_headers: tuple[str, ...]
    signature: str = field(repr=False)


@dataclass(frozen=True)
class SignedRequest:
    """A request as received: the path as the client sent it, query pairs already decoded,
    headers by lower-case name, the raw body."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    headers: Mapping[str, str]
    body: bytes


def is_signature_scheme(authorization: str) -> bool:
    return authorization.split(" ", 1)[0].upper() == ALGORITHM


def parse_authorization(value: str) -> SignedAuthorization:
    """``SDK-HMAC-SHA256 Access=..., SignedHeaders=a;b, Signature=<64 hex>``, strictly."""
    match = _AUTHORIZATION.match(value.strip())
    if match is None:
        raise SignatureRejected(
            "Authorization must be 'SDK-HMAC-SHA256 Access=<AK>, SignedHeaders=<a;b>, Signature=<hex>'")
    access_key, names, signature = match.groups()
    signed = tuple(names.split(";"))
    if len(signed) > MAX_SIGNED_HEADERS or not all(_HEADER_NAME.match(n) for n in signed):
        raise SignatureRejected("SignedHeaders must be lower-case header names separated by ';'")
    if len(set(signed)) != len(signed):
        raise SignatureRejected("SignedHeaders names a header twice")
    missing = [n for n in REQUIRED_SIGNED if n not in signed]
    if missing:
        raise SignatureRejected(f"SignedHeaders must include {' and '.join(missing)}")
    return SignedAuthorization(access_key, signed, signature.lower())


def _encode(text: str) -> str:
    return quote(text, safe="~")


def canonical_uri(path: str) -> str:
    encoded = "/".join(_encode(segment) for segment in unquote(path).split("/"))
    return encoded if encoded.endswith("/") else encoded + "/"


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    return "&".join(f"{_encode(name)}={_encode(value)}" for name, value in sorted(pairs))


def _header_value(value: str) -> str:
    """Trimmed. A client signs non-ASCII values as UTF-8 but sends the bytes as they are, which
    HTTP servers hand over decoded as Latin-1; undo that so the text is what was signed."""
    value = value.strip()
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def canonical_headers(headers: Mapping[str, str], signed: Iterable[str]) -> str:
    lines = []
    for name in signed:
        value = headers.get(name)
        if value is None:
            raise SignatureRejected(f"signed header {name!r} is not in the request")
        lines.append(f"{name}:{_header_value(value)}")
    return "\n".join(lines) + "\n"


def body_hash(request: SignedRequest) -> str:
    actual = hashlib.sha256(request.body).hexdigest()
    claimed = request.headers.get(CONTENT_HASH_HEADER)
    if request.body and claimed is not None and not hmac.compare_digest(claimed.strip().lower(), actual):
        raise SignatureRejected(
            f"{CONTENT_HASH_HEADER} does not match the body (unsigned payloads are refused)"
        )
    return actual


def canonical_request(request: SignedRequest, signed: Iterable[str]) -> str:
    signed = tuple(signed)
    return "\n".join([
        request.method.upper(), canonical_uri(request.path), canonical_query(request.query),
        canonical_headers(request.headers, signed), ";".join(signed), body_hash(request),
    ])


def string_to_sign(date: str, canonical: str) -> str:
    return f"{ALGORITHM}\n{date}\n{hashlib.sha256(canonical.encode('utf-8')).hexdigest()}"


def signature(secret_key: str, date: str, canonical: str) -> str:
    return hmac.new(secret_key.encode("utf-8"), string_to_sign(date, canonical).encode("utf-8"),
                    hashlib.sha256).hexdigest()


def signed_at(headers: Mapping[str, str], now: datetime) -> str:
    """The X-Sdk-Date header, checked to be well formed and within the replay window."""
    date = (headers.get(DATE_HEADER) or "").strip()
    try:
        when = datetime.strptime(date, DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise SignatureRejected("X-Sdk-Date must be the signing time as YYYYMMDDTHHMMSSZ (UTC)") from None
    if abs((now - when).total_seconds()) > MAX_SKEW_SECONDS:
        raise SignatureRejected(f"X-Sdk-Date is more than {MAX_SKEW_SECONDS // 60} minutes from the "
                                "server's clock: sign the request again")
    return date


def verify(
    request: SignedRequest, authorization: SignedAuthorization, secret_key: str, now: datetime
) -> None:
    """Raise SignatureRejected unless ``authorization`` is a fresh signature of this request by
    ``secret_key``."""
    date = signed_at(request.headers, now)
    expected = signature(secret_key, date, canonical_request(request, authorization.signed_headers))
    if not hmac.compare_digest(expected.encode("ascii"), authorization.signature.encode("ascii")):
        raise SignatureRejected("the signature does not match the request (wrong SK, or the request "
                                "was changed after signing)")


@dataclass(frozen=True)
class Signature:
    """An AK/SK-signed request as the service checks it (domain/auth.py ``SignatureProof``): the
    Authorization header read, and the request it signs (None: not given, nothing verifies).
    Every rejection is a 401 whose message says why, never anything secret."""

    authorization: SignedAuthorization
    request: SignedRequest | None = field(default=None, repr=False)

    @property
    def access_key(self) -> str:
        return self.authorization.access_key

    def check_date(self, now: datetime) -> None:
        """The cheap check, before any lookup: the signing time is within the replay window."""
        try:
            signed_at(self._request().headers, now)
        except SignatureRejected as error:
            raise Unauthorized(str(error)) from None

    def verify(self, secret_key: str, now: datetime) -> None:
        try:
            verify(self._request(), self.authorization, secret_key, now)
        except SignatureRejected as error:
            raise Unauthorized(str(error)) from None

    def _request(self) -> SignedRequest:
        if self.request is None:
            raise Unauthorized("an SDK-HMAC-SHA256 signature needs the request it signs")
        return self.request
