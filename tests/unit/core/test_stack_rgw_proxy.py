"""The RGW proxy's request rewriting, checked against botocore's own SigV4 signer."""

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from streamml.stack.rgw_proxy import (
    SigV4, body_length, etag_of, head_request, is_conditional_write, parse_authorization, unquote_if_match,
)

pytestmark = pytest.mark.unit
ACCESS, SECRET = "AKIDEXAMPLE0123456789", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
URL = "http://127.0.0.1:7480/tansu/clusters/c1/topics/t/partitions/0000000000/watermark.json"


def signed_head(if_match: str | None, secret: str = SECRET, url: str = URL, body: bytes = b"{}",
                method: str = "PUT", if_none_match: str | None = None) -> bytes:
    """A request head exactly as an S3 client signs and sends it."""
    headers = {"Content-Length": str(len(body))} if method == "PUT" else {}
    if if_match is not None:
        headers["If-Match"] = if_match
    if if_none_match is not None:
        headers["If-None-Match"] = if_none_match
    request = AWSRequest(method=method, url=url, data=body if method == "PUT" else b"", headers=headers)
    S3SigV4Auth(Credentials(ACCESS, secret), "s3", "default").add_auth(request)
    target = url.split("7480", 1)[1]
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1:7480", *(f"{k}: {v}" for k, v in request.headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def header(head: bytes, name: str) -> str:
    for line in head.decode().split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.lower() == name:
            return value.strip()
    raise KeyError(name)


def signature(head: bytes) -> str:
    return header(head, "authorization").rsplit("Signature=", 1)[1]


def test_a_quoted_if_match_is_unquoted_and_signed_as_the_client_would_sign_it():
    original = signed_head('"3858f62230ac3c915f300c664312c63f"')
    rewritten = unquote_if_match(original, SigV4(ACCESS, SECRET))
    assert header(rewritten, "if-match") == "3858f62230ac3c915f300c664312c63f"
    assert header(rewritten, "x-amz-date") == header(original, "x-amz-date")
    # What botocore signs for the unquoted header (same second, hence the same date): RGW accepts it.
    expected = signed_head("3858f62230ac3c915f300c664312c63f")
    if header(expected, "x-amz-date") == header(original, "x-amz-date"):
        assert signature(rewritten) == signature(expected)
    else:  # the clock ticked between the two signings: sign again
        assert signature(unquote_if_match(signed_head('"3858f62230ac3c915f300c664312c63f"'),
                                          SigV4(ACCESS, SECRET))) == signature(signed_head("3858f62230ac3c915f300c664312c63f"))


def test_a_query_string_and_escaped_key_are_signed_the_same_way():
    url = URL.replace("watermark.json", "a%20b.json") + "?x-id=PutObject&b=2&a=1"
    rewritten = unquote_if_match(signed_head('"abc"', url=url), SigV4(ACCESS, SECRET))
    assert signature(rewritten) == signature(signed_head("abc", url=url))


def test_requests_without_a_quoted_if_match_pass_untouched():
    signer = SigV4(ACCESS, SECRET)
    for head in (signed_head(None), signed_head("abc"), signed_head("*")):
        assert unquote_if_match(head, signer) is head


def test_a_request_not_signed_with_the_stacks_key_is_never_signed_by_the_proxy():
    forged = signed_head('"abc"', secret="not-the-secret")
    assert unquote_if_match(forged, SigV4(ACCESS, SECRET)) is forged
    other_key = signed_head('"abc"').replace(ACCESS.encode(), b"AKIDSOMEONEELSE000000")
    assert unquote_if_match(other_key, SigV4(ACCESS, SECRET)) is other_key


def test_authorization_header_parts():
    parsed = parse_authorization(header(signed_head('"e"'), "authorization"))
    assert parsed is not None
    access, scope, signed, _ = parsed
    assert access == ACCESS and scope.endswith("/default/s3/aws4_request")
    assert "if-match" in signed and "host" in signed
    assert parse_authorization("AWS AKID:signature") is None


def test_body_length():
    assert body_length(b"PUT /b/k HTTP/1.1\r\nContent-Length: 12\r\n\r\n") == 12
    assert body_length(b"GET /b/k HTTP/1.1\r\nHost: h\r\n\r\n") == 0
    assert body_length(b"PUT /b/k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n") is None
    with pytest.raises(ValueError, match="negative Content-Length -1"):
        body_length(b"PUT /b/k HTTP/1.1\r\nContent-Length: -1\r\n\r\n")


def test_conditional_writes_are_recognised():
    assert is_conditional_write(signed_head('"abc"'))
    assert is_conditional_write(signed_head(None, if_none_match="*"))
    assert not is_conditional_write(signed_head(None))
    assert not is_conditional_write(signed_head(None, method="GET"))
    assert not is_conditional_write(signed_head(None, if_none_match="*").replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n"))


def test_the_check_after_a_412_is_a_head_signed_as_botocore_signs_it():
    write = signed_head(None, if_none_match="*")
    check = head_request(write, SigV4(ACCESS, SECRET))
    assert check is not None and check.startswith(b"HEAD /tansu/clusters/c1/")
    expected = signed_head(None, method="HEAD")  # botocore signs a HEAD of the same key
    if header(expected, "x-amz-date") == header(check, "x-amz-date"):
        assert signature(check) == signature(expected)
    assert head_request(signed_head(None, if_none_match="*", secret="not-the-secret"), SigV4(ACCESS, SECRET)) is None


def test_etag_of_a_response():
    assert etag_of(b'HTTP/1.1 200 OK\r\nETag: "d41d8cd98f00b204e9800998ecf8427e"\r\n\r\n') == "d41d8cd98f00b204e9800998ecf8427e"
    assert etag_of(b"HTTP/1.1 404 Not Found\r\n\r\n") is None
