"""Which request signer Spark's S3A connector uses for an endpoint.

S3A signs with SigV4 and, over plain HTTP, sends object bodies as
``aws-chunked`` streams with a signature per chunk. Ceph 16's gateway
verifies such a stream wrongly when it is empty and answers
``XAmzContentSHA256Mismatch`` to every 0-byte PUT (the directory markers a
Spark job writes). For that gateway only, S3A must use the old S3 signer.

``auto`` finds out by asking: one 0-byte PUT signed exactly as S3A signs it
(checked against the example in AWS's "Signature Calculations for the
Authorization Header: Transferring Payload in Multiple Chunks"). Only that
error picks the old signer; any other answer keeps SigV4.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import logging
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlsplit

from streamml.settings import S3Settings
from streamml.store import ObjectStore, make_client

Signer = Literal["auto", "v4", "v2"]
# Hadoop's names for the signers.
HADOOP_SIGNERS = {"v4": "AWSS3V4SignerType", "v2": "S3SignerType"}
STREAMING = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
PROBE_KEY = "_streamml/s3a-signing-probe"

log = logging.getLogger("streamml.prep")


def choose_signer(wanted: Signer, s3: S3Settings) -> Literal["v4", "v2"]:
    """``wanted``, or for ``auto`` what the endpoint accepts (SigV4 for AWS and any correct gateway)."""
    if wanted != "auto":
        return wanted
    if s3.endpoint is None or s3.access_key_id is None or s3.secret_access_key is None:
        return "v4"
    status, body = put_empty_streaming(s3, PROBE_KEY)
    if status == 200:
        ObjectStore(s3, make_client(s3)).delete(PROBE_KEY)
    if status == 400 and b"XAmzContentSHA256Mismatch" in body:
        log.info("the S3 endpoint mis-verifies empty SigV4 streams (Ceph 16's gateway): S3A uses the old S3 signer; "
                 "STREAMML_PREP_S3A_SIGNER=v4 or v2 sets it explicitly", extra={"endpoint": s3.endpoint})
        return "v2"
    return "v4"


def put_empty_streaming(s3: S3Settings, key: str, timeout_s: float = 10.0) -> tuple[int, bytes]:
    """PUT a 0-byte object as one signed aws-chunked stream, as S3A does; returns (status, body)."""
    assert s3.endpoint is not None and s3.access_key_id is not None and s3.secret_access_key is not None
    url = urlsplit(s3.endpoint)
    path = f"{url.path.rstrip('/')}/{s3.bucket}/{key}"
    now = datetime.now(UTC)
    headers = {"host": url.netloc, "content-encoding": "aws-chunked", "x-amz-content-sha256": STREAMING,
               "x-amz-date": now.strftime("%Y%m%dT%H%M%SZ"), "x-amz-decoded-content-length": "0"}
    seed, chunk = streaming_signatures(s3.secret_access_key.get_secret_value(), s3.region, "PUT", path, headers, [b""])
    scope = f"{now:%Y%m%d}/{s3.region}/s3/aws4_request"
    body = f"0;chunk-signature={chunk[0]}\r\n\r\n".encode()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={s3.access_key_id.get_secret_value()}/{scope}, "
                                f"SignedHeaders={';'.join(sorted(headers))}, Signature={seed}")
    connection_class = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(url.netloc, timeout=timeout_s)
    try:
        connection.request("PUT", path, body, headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def streaming_signatures(
    secret: str, region: str, method: str, path: str, headers: dict[str, str], chunks: list[bytes]
) -> tuple[str, list[str]]:
    """The seed signature of a SigV4 streaming upload and the signature of each chunk (the last one empty)."""
    amz_date = headers["x-amz-date"]
    day = amz_date[:8]
    scope = f"{day}/{region}/s3/aws4_request"
    names = sorted(headers)
    canonical = "\n".join([method, path, "", *(f"{name}:{headers[name]}" for name in names), "", ";".join(names),
                           STREAMING])
    key = _signing_key(secret, day, region)
    previous = _hex_hmac(key, "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, _sha256(canonical.encode())]))
    seed, signatures = previous, []
    for chunk in chunks:
        previous = _hex_hmac(key, "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous, _sha256(b""),
                                              _sha256(chunk)]))
        signatures.append(previous)
    return seed, signatures


def _signing_key(secret: str, day: str, region: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _hex_hmac(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
