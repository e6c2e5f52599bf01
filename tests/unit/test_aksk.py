"""The SDK-HMAC-SHA256 verifier (api/aksk.py) against signatures the official Huawei Cloud SDK
signer (huaweicloudsdkcore, test-only dependency) makes: canonical URI and query edge cases,
headers, bodies, the replay window and every way a signature must be refused."""
from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

from chalicelib.api import aksk
from chalicelib.api.credentials import parse_credentials
from chalicelib.domain import auth
from chalicelib.domain.auth import ACCESS_KEY_SCHEME, Unauthorized

AK = "STAKABCDEFGHIJKLMNOP"
SK = "st_sk_" + "s" * 43
NOW = datetime(2026, 3, 20, 17, 17, 13, tzinfo=UTC)
SDK_DATE = "20260320T171713Z"


def sdk_sign(method="POST", path="/v3/jobs/stop", query=(), headers=None, body=None, sk=SK, date=SDK_DATE):
    """What the SDK sends: sign with its Signer, then read the request back as a server would
    (path as sent, query decoded, headers by lower-case name)."""
    header_params = {"Content-Type": "application/json", "X-Project-Id": "p1", **(headers or {})}
    if date is not None:
        header_params["X-Sdk-Date"] = date
    request = SdkRequest(method=method, schema="https", host="codearts.example.test:8443",
                         resource_path=path, query_params=list(query), header_params=header_params,
                         body=body)
    Signer(BasicCredentials(AK, sk, "p1")).sign(request)
    url = urlsplit(request.uri)
    sent = {
        k.lower(): (v.decode("latin-1") if isinstance(v, bytes) else v)
        for k, v in request.header_params.items()
    }
    received = aksk.SignedRequest(method=method, path=url.path,
                                  # reversed: a server promises no order (chalice groups by name)
                                  query=tuple(reversed(parse_qsl(url.query, keep_blank_values=True))),
                                  headers=sent, body=request.body or b"")
    return received, aksk.parse_authorization(sent["authorization"])


def check(received, authorization, sk=SK, now=NOW):
    aksk.verify(received, authorization, sk, now)


# ---- signatures the SDK makes are accepted ----------------------------------------------------

@pytest.mark.parametrize("path, query", [
    ("/v3/jobs/stop", ()),
    ("/v1/job/f9d6c8466d614a9788e9a0acf6c15f46/stop", [("build_no", 20)]),
    ("/v3/jobs/f9d6c8466d614a9788e9a0acf6c15f46/20/stop", ()),
    ("/v3/jobs/stop/", ()),  # a trailing slash is not doubled
    ("/api/a%20b/c%2Fd/~x_y.z-/%E2%9C%93", ()),  # encoded characters in the path
    ("/q", [("b", "2"), ("a", "z"), ("a", "y"), ("a", "")]),  # repeated and empty parameters
    ("/q", [("name", "a b+c/d~e*f'g!(h)"), ("ünï", "çødé ✓"), ("x&y", "=&")]),  # encoded query
    ("/q", [("flag", True), ("n", 10)]),  # non-strings, as the SDK turns them into text
])
def test_sdk_signatures_over_paths_and_queries_verify(path, query):
    received, authorization = sdk_sign(path=path, query=query)
    check(received, authorization)


@pytest.mark.parametrize(
    "body", [None, b"", b'{"job_id": "x", "build_no": "1"}', '{"k": "\u00e9\u2713"}'.encode()]
)
def test_sdk_signatures_over_bodies_verify(body):
    received, authorization = sdk_sign(body=body)
    check(received, authorization)


def test_empty_body_hashes_as_the_empty_string():
    received, _ = sdk_sign(body=None)
    assert aksk.canonical_request(received, ("host", "x-sdk-date")).endswith("\n" + aksk.EMPTY_BODY_HASH)


def test_signed_non_ascii_header_values_verify():
    """The SDK signs UTF-8 text but sends the bytes, which servers decode as Latin-1."""
    received, authorization = sdk_sign(headers={"X-Label": "build ✓ café"})
    assert "x-label" in authorization.signed_headers
    check(received, authorization)


def test_canonical_forms():
    assert aksk.canonical_uri("/v3/jobs/stop") == "/v3/jobs/stop/"
    assert aksk.canonical_uri("/v3/jobs/stop/") == "/v3/jobs/stop/"
    assert aksk.canonical_uri("/a%20b/c d/%7Ex") == "/a%20b/c%20d/~x/"
    assert (
        aksk.canonical_query([("b", "1"), ("a", "2"), ("a", "1"), ("c", "x y/+")])
        == "a=1&a=2&b=1&c=x%20y%2F%2B"
    )
    assert aksk.canonical_query([]) == ""


def test_the_date_window_is_15_minutes_either_way():
    received, authorization = sdk_sign()
    for seconds in (-900, 0, 900):
        check(received, authorization, now=NOW.replace(minute=17) if seconds == 0 else
              datetime.fromtimestamp(NOW.timestamp() + seconds, UTC))
    for seconds in (-901, 901):
        with pytest.raises(aksk.SignatureRejected, match="15 minutes"):
            check(received, authorization, now=datetime.fromtimestamp(NOW.timestamp() + seconds, UTC))


# ---- everything else is refused ---------------------------------------------------------------

def _changed(received, **changes):
    fields = {"method": received.method, "path": received.path, "query": received.query,
              "headers": dict(received.headers), "body": received.body, **changes}
    return aksk.SignedRequest(**fields)


@pytest.mark.parametrize("change", [
    lambda r: _changed(r, method="PUT"),
    lambda r: _changed(r, path="/v3/jobs/other"),
    lambda r: _changed(r, query=(("build_no", "21"),)),
    lambda r: _changed(r, query=(("build_no", "20"), ("build_no", "21"))),
    lambda r: _changed(r, body=b'{"job_id": "f9d6c8466d614a9788e9a0acf6c15f46", "build_no": "21"}'),
    lambda r: _changed(r, body=b""),
    lambda r: _changed(r, headers={**r.headers, "host": "elsewhere.test"}),
    lambda r: _changed(r, headers={**r.headers, "x-project-id": "p2"}),
], ids=["method", "path", "query", "repeated-query", "body", "no-body", "host", "signed-header"])
def test_a_changed_request_is_refused(change):
    received, authorization = sdk_sign(
        query=[("build_no", 20)], body=b'{"job_id": "f9d6c8466d614a9788e9a0acf6c15f46", "build_no": "20"}'
    )
    check(received, authorization)
    with pytest.raises(aksk.SignatureRejected, match="does not match"):
        check(change(received), authorization)


def test_a_wrong_secret_key_is_refused():
    received, authorization = sdk_sign(sk="st_sk_" + "w" * 43)
    with pytest.raises(aksk.SignatureRejected, match="does not match"):
        check(received, authorization)


def test_unsigned_headers_may_change():
    received, authorization = sdk_sign()
    check(_changed(received, headers={**received.headers, "accept": "text/plain"}), authorization)


def test_unsigned_payload_and_a_false_content_hash_are_refused():
    body = b'{"a": 1}'
    received, authorization = sdk_sign(body=body, headers={"Content-Type": "text/plain"})
    assert received.headers["x-sdk-content-sha256"] == "UNSIGNED-PAYLOAD"  # what the SDK does for text
    with pytest.raises(aksk.SignatureRejected, match="unsigned payloads are refused"):
        check(received, authorization)


def test_a_missing_or_malformed_date_is_refused():
    received, authorization = sdk_sign()
    for headers in ({k: v for k, v in received.headers.items() if k != "x-sdk-date"},
                    {**received.headers, "x-sdk-date": "2026-03-20T17:17:13Z"}):
        with pytest.raises(aksk.SignatureRejected, match="X-Sdk-Date"):
            check(_changed(received, headers=headers), authorization)


def test_a_signed_header_missing_from_the_request_is_refused():
    received, authorization = sdk_sign()
    headers = {k: v for k, v in received.headers.items() if k != "x-project-id"}
    with pytest.raises(aksk.SignatureRejected, match="'x-project-id' is not in the request"):
        check(_changed(received, headers=headers), authorization)


SIG = "a" * 64


@pytest.mark.parametrize("value, message", [
    (f"SDK-HMAC-SHA256 Access={AK}, SignedHeaders=content-type;x-sdk-date, Signature={SIG}", "include host"),
    (f"SDK-HMAC-SHA256 Access={AK}, SignedHeaders=host;content-type, Signature={SIG}", "include x-sdk-date"),
    (f"SDK-HMAC-SHA256 Access={AK}, SignedHeaders=host;x-sdk-date;host, Signature={SIG}", "twice"),
    (f"SDK-HMAC-SHA256 Access={AK}, SignedHeaders=Host;x-sdk-date, Signature={SIG}", "lower-case"),
    (f"SDK-HMAC-SHA256 Access={AK}, SignedHeaders=host;x-sdk-date, Signature=abc", "must be"),
    (f"SDK-HMAC-SHA256 Access={AK}, Signature={SIG}", "must be"),
    (f"SDK-HMAC-SHA256 Access=, SignedHeaders=host;x-sdk-date, Signature={SIG}", "must be"),
])
def test_malformed_authorization_is_refused(value, message):
    with pytest.raises(aksk.SignatureRejected, match=message):
        aksk.parse_authorization(value)
    with pytest.raises(Unauthorized):
        parse_credentials({"authorization": value})


def test_credentials_carry_the_access_key_and_never_show_the_signature():
    value = f"SDK-HMAC-SHA256 Access={AK}, SignedHeaders=host;x-sdk-date, Signature={SIG}"
    credentials = parse_credentials({"authorization": value})
    assert credentials.scheme == ACCESS_KEY_SCHEME and credentials.secret == AK
    assert credentials.signed.authorization.signed_headers == ("host", "x-sdk-date")
    assert SIG not in repr(credentials)
    with pytest.raises(Unauthorized, match="disagree"):  # and a token beside it: which one?
        parse_credentials({"authorization": value, "x-auth-token": "st_" + "x" * 43})


def test_new_keys_have_their_documented_shapes():
    assert auth.looks_like_access_key(auth.new_access_key())
    assert auth.new_access_key() != auth.new_access_key()
    secret = auth.new_secret_key()
    assert secret.startswith("st_sk_") and len(secret) == 49


def test_a_signature_checks_itself_as_the_service_asks_and_answers_401():
    """api/aksk.Signature is what the service sees of an AK/SK request (domain/auth.py
    SignatureProof): every rejection is a 401, and without the request nothing verifies."""
    received, authorization = sdk_sign(body="{}")
    signature = aksk.Signature(authorization, received)
    assert signature.access_key == AK
    signature.check_date(NOW)
    signature.verify(SK, NOW)
    with pytest.raises(Unauthorized, match="15 minutes"):
        signature.check_date(NOW + timedelta(minutes=16))
    with pytest.raises(Unauthorized, match="does not match"):
        signature.verify("st_sk_" + "x" * 43, NOW)
    for check in (lambda s: s.check_date(NOW), lambda s: s.verify(SK, NOW)):
        with pytest.raises(Unauthorized, match="needs the request it signs"):
            check(aksk.Signature(authorization, None))


# ---- what a client is told, and the edges of the scheme ----------------------------------------

def test_a_content_hash_header_is_compared_whatever_the_case_of_its_hex():
    """A client may send X-Sdk-Content-Sha256 in upper-case hex: it is the same hash."""
    body = b'{"job_id": "x", "build_no": "1"}'
    received, authorization = sdk_sign(body=body)
    digest = hashlib.sha256(body).hexdigest()
    for claimed in (digest, digest.upper(), f" {digest.upper()} "):
        headers = {**received.headers, "x-sdk-content-sha256": claimed}
        check(_changed(received, headers=headers), authorization)


def test_the_date_refusals_say_exactly_what_to_send():
    received, authorization = sdk_sign()
    no_date = {k: v for k, v in received.headers.items() if k != "x-sdk-date"}
    with pytest.raises(aksk.SignatureRejected) as refused:
        check(_changed(received, headers=no_date), authorization)
    assert str(refused.value) == "X-Sdk-Date must be the signing time as YYYYMMDDTHHMMSSZ (UTC)"
    with pytest.raises(aksk.SignatureRejected) as refused:
        check(received, authorization, now=NOW + timedelta(minutes=16))
    assert str(refused.value) == (
        "X-Sdk-Date is more than 15 minutes from the server's clock: sign the request again")


def test_a_signature_without_its_request_is_refused_with_a_message_that_says_so():
    value = f"SDK-HMAC-SHA256 Access={AK}, SignedHeaders=host;x-sdk-date, Signature={SIG}"
    with pytest.raises(Unauthorized) as refused:
        aksk.Signature(aksk.parse_authorization(value), None).verify(SK, NOW)
    assert str(refused.value) == "an SDK-HMAC-SHA256 signature needs the request it signs"


def test_the_scheme_is_the_first_space_separated_word_in_any_case():
    assert aksk.is_signature_scheme(f"SDK-HMAC-SHA256 Access={AK}")
    assert aksk.is_signature_scheme(f"sdk-hmac-sha256 Access={AK}")
    assert not aksk.is_signature_scheme(f"SDK-HMAC-SHA1 Access={AK}")
    assert not aksk.is_signature_scheme("Bearer st_token")
    # HTTP separates the scheme from its parameters by a space (RFC 9110), as Bearer and Basic
    assert not aksk.is_signature_scheme(f"SDK-HMAC-SHA256\tAccess={AK}")


def test_a_tab_after_the_scheme_is_not_a_signature():
    value = f"SDK-HMAC-SHA256\tAccess={AK}, SignedHeaders=host;x-sdk-date, Signature={SIG}"
    with pytest.raises(Unauthorized, match="use Authorization: Bearer"):
        parse_credentials({"authorization": value})


@pytest.mark.parametrize("signed_headers, message", [
    ("content-type;x-sdk-date", "SignedHeaders must include host"),
    ("host;content-type", "SignedHeaders must include x-sdk-date"),
    ("content-type", "SignedHeaders must include host and x-sdk-date"),
    ("host;x-sdk-date;host", "SignedHeaders names a header twice"),
    ("Host;x-sdk-date", "SignedHeaders must be lower-case header names separated by ';'"),
])
def test_the_signed_headers_refusals_say_exactly_what_is_wrong(signed_headers, message):
    value = f"SDK-HMAC-SHA256 Access={AK}, SignedHeaders={signed_headers}, Signature={SIG}"
    with pytest.raises(aksk.SignatureRejected) as refused:
        aksk.parse_authorization(value)
    assert str(refused.value) == message


def test_up_to_32_signed_headers_are_read_and_no_more():
    names = ["host", "x-sdk-date"] + [f"x-h{i}" for i in range(30)]
    value = f"SDK-HMAC-SHA256 Access={AK}, SignedHeaders={';'.join(names)}, Signature={SIG}"
    assert aksk.parse_authorization(value).signed_headers == tuple(names)
    value = f"SDK-HMAC-SHA256 Access={AK}, SignedHeaders={';'.join([*names, 'x-h30'])}, Signature={SIG}"
    with pytest.raises(aksk.SignatureRejected, match="lower-case header names"):
        aksk.parse_authorization(value)


def test_a_wrong_signature_is_refused_with_a_message_that_says_why():
    received, authorization = sdk_sign(sk="st_sk_" + "w" * 43)
    with pytest.raises(aksk.SignatureRejected) as refused:
        check(received, authorization)
    assert str(refused.value) == (
        "the signature does not match the request (wrong SK, or the request was changed after signing)")
