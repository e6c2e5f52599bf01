"""Credentials as HTTP carries them: ``Authorization: Bearer``, ``Basic`` (user:token),
``SDK-HMAC-SHA256`` (an AK/SK signature, api/aksk.py) and ``X-Auth-Token``.

Pure: reads a header mapping, no chalice, so its tests stay in the unit tier. The schemes are
how other systems' clients send a credential (GoCD's Basic auth, CodeArts' X-Auth-Token, Huawei
SDKs' signature), not rules of ours: what a credential may do is domain/auth.py, who holds one
is service/tokens.py. api/security.py reads every request's credentials with this.
"""
from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping

from ..domain.auth import ACCESS_KEY_SCHEME, Credentials, Unauthorized
from . import aksk

MAX_CREDENTIAL_CHARS = 1024  # longer is refused before any lookup
MAX_USER_CHARS = 100
_USER = re.compile(r"^[\x21-\x7e][\x20-\x7e]{0,99}$")  # printable ASCII, no leading space

RequestOf = Callable[[], aksk.SignedRequest]  # the request as a signature covers it, on demand


def parse_credentials(headers: Mapping[str, str],
                      signed_request: RequestOf | None = None) -> Credentials | None:
    """Read ``Authorization: Bearer``, ``Authorization: Basic`` (user:token, as GoCD clients
    send), ``Authorization: SDK-HMAC-SHA256`` (an access key signature, as Huawei's SDKs send)
    or ``X-Auth-Token`` (as CodeArts clients send). None if there are none; 401 if they
    are unreadable or two different ones are sent (which one would a proxy have meant?).
    ``signed_request`` gives the request as a signature covers it; called only for a signature."""
    found: list[Credentials] = []
    authorization = (headers.get("authorization") or "").strip()
    if authorization:
        found.append(_parse_authorization(authorization, signed_request))
    x_auth = (headers.get("x-auth-token") or "").strip()
    if x_auth:
        found.append(Credentials(_bounded(x_auth), None, "x-auth-token"))
    if not found:
        return None
    if len({c.secret for c in found}) > 1:
        raise Unauthorized("send one credential: Authorization and X-Auth-Token disagree")
    return found[0]


SESSION_COOKIE = "stagetrack_session"  # the dashboard's session (api/session.py)
_MAX_COOKIE_HEADER = 8192


def session_cookie(headers: Mapping[str, str]) -> str | None:
    """The value of the ``stagetrack_session`` cookie (the first one, as the browser orders
    them), or None when there is none. Its shape is checked where it is looked up."""
    raw = headers.get("cookie") or ""
    if not raw or len(raw) > _MAX_COOKIE_HEADER:
        return None
    for part in raw.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name.strip() == SESSION_COOKIE:
            return value.strip().strip('"')
    return None


def _bounded(secret: str) -> str:
    if len(secret) > MAX_CREDENTIAL_CHARS or not secret.isprintable():
        raise Unauthorized("the credential is not a stagetrack token")
    return secret


def _parse_authorization(value: str, signed_request: RequestOf | None) -> Credentials:
    scheme, _, rest = value.partition(" ")
    scheme, rest = scheme.lower(), rest.strip()
    if scheme == "bearer" and rest:
        return Credentials(_bounded(rest), None, "bearer")
    if scheme == "basic" and rest:
        if len(rest) > MAX_CREDENTIAL_CHARS * 2:
            raise Unauthorized("the credential is not a stagetrack token")
        try:
            decoded = base64.b64decode(rest, validate=True).decode()
        except (binascii.Error, ValueError):
            raise Unauthorized("Basic credentials must be base64 of user:token") from None
        user, sep, password = decoded.partition(":")
        if not sep or not password:
            raise Unauthorized("Basic credentials must be user:token, the token as password")
        if user and not _USER.fullmatch(user):
            raise Unauthorized(
                f"the Basic user name must be printable ASCII, at most {MAX_USER_CHARS} characters"
            )
        return Credentials(_bounded(password), user or None, "basic")
    if aksk.is_signature_scheme(value):
        try:
            signed = aksk.parse_authorization(value)
        except aksk.SignatureRejected as error:
            raise Unauthorized(str(error)) from None
        request = None if signed_request is None else signed_request()
        return Credentials(signed.access_key, None, ACCESS_KEY_SCHEME, aksk.Signature(signed, request))
    raise Unauthorized("use Authorization: Bearer <token>, Basic auth, SDK-HMAC-SHA256 or X-Auth-Token")
