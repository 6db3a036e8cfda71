"""A loopback proxy in front of Ceph's RADOS Gateway that makes ``If-Match``
work for the embedded broker.

Why: Tansu's durable ``s3://`` engine updates its watermark objects with
``If-Match: "<etag>"``, quoted as S3 returns ETags and as HTTP specifies.
Ceph 16.2's gateway compares the header byte for byte with its stored,
unquoted ETag, so every such write fails with 412 and the broker retries
forever. Neither side has a setting for this. The proxy strips the quotes
and, because the header is covered by the request's SigV4 signature, signs
the request again with the same key.

It re-signs only a request whose original signature it has verified with
that key, so it never signs anything for a client that does not hold the
key.

A conditional write (``If-None-Match: *`` or ``If-Match``) also meets a
crash: when the proxy or RGW dies after RGW stored the object but before
the answer reached Tansu, Tansu's client sends the write again and gets 412,
and the broker reports a failed produce for records it did store. So each
conditional write goes to RGW on a connection of its own; on 412 the proxy
asks RGW for the object's ETag (the MD5 of its bytes) and, when the object
already holds exactly the bytes being written, answers 200: the earlier try
succeeded. Every other request passes through byte for byte, and its
response is not parsed at all.

    python -m streamml.stack.rgw_proxy --listen-port P --rgw-port R --keys <state>/ceph/s3.json

The keys file (mode 0600) is read at start; the secret never appears on a
command line or in the log.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import logging
import signal
import sys
from pathlib import Path
from urllib.parse import urlsplit

HOST = "127.0.0.1"
_HEAD_LIMIT = 1 << 20  # request line + headers; S3 allows far less
_CHUNK = 1 << 18
# Conditional writes larger than this stream through unchecked (Tansu's are a batch or a small JSON).
_MAX_CHECKED_WRITE = 32 << 20
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
log = logging.getLogger("rgw-proxy")


class SigV4:
    """Verifies and recomputes AWS Signature Version 4 for one key pair."""

    def __init__(self, access_key: str, secret_key: str) -> None:
        self.access_key = access_key
        self._secret = ("AWS4" + secret_key).encode()
        self._keys: dict[str, bytes] = {}  # credential scope -> signing key

    def signature(self, method: str, target: str, headers: list[tuple[str, str]],
                  scope: str, signed: list[str]) -> str:
        path, _, query = target.partition("?")
        pairs = sorted(tuple(p.split("=", 1)) if "=" in p else (p, "") for p in query.split("&") if p)
        values: dict[str, list[str]] = {}
        for name, value in headers:
            values.setdefault(name.lower(), []).append(" ".join(value.split()))
        canonical = "\n".join([
            method, path or "/", "&".join(f"{k}={v}" for k, v in pairs),
            "".join(f"{name}:{','.join(values.get(name, []))}\n" for name in signed),
            ";".join(signed), values.get("x-amz-content-sha256", ["UNSIGNED-PAYLOAD"])[0],
        ])
        to_sign = "\n".join(["AWS4-HMAC-SHA256", values.get("x-amz-date", [""])[0], scope,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        return hmac.new(self._signing_key(scope), to_sign.encode(), hashlib.sha256).hexdigest()

    def _signing_key(self, scope: str) -> bytes:
        key = self._keys.get(scope)
        if key is None:
            key = self._secret
            for part in scope.split("/"):  # date, region, service, "aws4_request"
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._keys = {scope: key}  # the scope changes once a day at most
        return key


def parse_authorization(value: str) -> tuple[str, str, list[str], str] | None:
    """(access key, scope, signed header names, signature) of a SigV4 header."""
    algorithm, _, rest = value.partition(" ")
    if algorithm != "AWS4-HMAC-SHA256":
        return None
    fields = dict(part.strip().split("=", 1) for part in rest.split(",") if "=" in part)
    try:
        access_key, scope = fields["Credential"].split("/", 1)
        return access_key, scope, fields["SignedHeaders"].split(";"), fields["Signature"]
    except (KeyError, ValueError):
        return None


def _parse(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = [(name.strip(), value.strip()) for name, _, value in
               (line.partition(":") for line in lines[1:] if line)]
    return lines[0], headers


def _verified(request_line: str, headers: list[tuple[str, str]], signer: SigV4) -> tuple[str, str, list[str], str] | None:
    """(method, target, signed header names, scope) when the stack's key signed this request."""
    auth = next((v for n, v in headers if n.lower() == "authorization"), None)
    parsed = parse_authorization(auth) if auth else None
    if parsed is None or parsed[0] != signer.access_key:
        return None
    _, scope, signed, signature = parsed
    method, target = request_line.split(" ", 2)[:2]
    target = urlsplit(target)._replace(scheme="", netloc="").geturl() if "://" in target else target
    if not hmac.compare_digest(signer.signature(method, target, headers, scope, signed), signature):
        log.warning("a %s request is not signed by the stack's key; passed on unchanged", method)
        return None
    return method, target, signed, scope


def unquote_if_match(head: bytes, signer: SigV4) -> bytes:
    """The request head with a quoted If-Match unquoted and signed again;
    unchanged when there is nothing to fix or the signature does not verify."""
    request_line, headers = _parse(head)
    at = next((i for i, (n, v) in enumerate(headers)
               if n.lower() == "if-match" and len(v) > 2 and v[0] == v[-1] == '"'), None)
    if at is None:
        return head
    verified = _verified(request_line, headers, signer)
    if verified is None:
        return head
    method, target, signed, scope = verified
    auth = next(i for i, (n, _) in enumerate(headers) if n.lower() == "authorization")
    signature = headers[auth][1].rsplit("Signature=", 1)[1]
    headers[at] = (headers[at][0], headers[at][1][1:-1])
    new_signature = signer.signature(method, target, headers, scope, signed)
    headers[auth] = (headers[auth][0], headers[auth][1].replace(signature, new_signature))
    return "\r\n".join([request_line, *(f"{n}: {v}" for n, v in headers), "", ""]).encode("latin-1")


def is_conditional_write(head: bytes) -> bool:
    """A PUT with If-None-Match or If-Match whose body has a known length and no 100-continue."""
    request_line, headers = _parse(head)
    names = {name.lower() for name, _ in headers}
    return (request_line.startswith("PUT ") and bool(names & {"if-none-match", "if-match"})
            and not names & {"expect", "transfer-encoding"})


def head_request(write: bytes, signer: SigV4) -> bytes | None:
    """A HEAD of the object a conditional write names, signed with the stack's
    key at the write's own date and scope; None unless that key signed the write."""
    request_line, headers = _parse(write)
    verified = _verified(request_line, headers, signer)
    if verified is None:
        return None
    _, target, _, scope = verified
    path = target.split("?", 1)[0]
    host = next((v for n, v in headers if n.lower() == "host"), f"{HOST}")
    date = next((v for n, v in headers if n.lower() == "x-amz-date"), "")
    check = [("host", host), ("x-amz-content-sha256", _EMPTY_SHA256), ("x-amz-date", date)]
    names = [name for name, _ in check]
    signature = signer.signature("HEAD", path, check, scope, names)
    auth = (f"AWS4-HMAC-SHA256 Credential={signer.access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}")
    lines = [f"HEAD {path} HTTP/1.1", *(f"{n}: {v}" for n, v in check), f"Authorization: {auth}", "", ""]
    return "\r\n".join(lines).encode("latin-1")


def etag_of(response_head: bytes) -> str | None:
    return next((v.strip('"') for n, v in _parse(response_head)[1] if n.lower() == "etag"), None)


def body_length(head: bytes) -> int | None:
    """Content-Length of a request head; None for a chunked body."""
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding" and b"chunked" in value.lower():
            return None
        if name == b"content-length":
            length = int(value.strip())
            if length < 0:
                raise ValueError(f"negative Content-Length {length}")
    return length


class Proxy:
    def __init__(self, listen_port: int, rgw_port: int, signer: SigV4) -> None:
        self.listen_port, self.rgw_port, self.signer = listen_port, rgw_port, signer
        self.rgw_down = False  # logged once per outage, not once per request

    async def serve(self, stopping: asyncio.Event) -> None:
        server = await asyncio.start_server(self._connection, HOST, self.listen_port, limit=_HEAD_LIMIT)
        log.info("forwarding %s:%d to RGW at %s:%d", HOST, self.listen_port, HOST, self.rgw_port)
        async with server:
            await stopping.wait()

    async def _connection(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        try:
            rgw_in, rgw_out = await asyncio.open_connection(HOST, self.rgw_port, limit=_HEAD_LIMIT)
        except OSError as error:
            if not self.rgw_down:
                log.warning("RGW at %s:%d unreachable (%s); closing client connections until it is back",
                            HOST, self.rgw_port, error)
                self.rgw_down = True
            client_out.close()
            return
        if self.rgw_down:
            log.info("RGW reachable again")
            self.rgw_down = False
        responses = asyncio.create_task(_pipe(rgw_in, client_out))
        try:
            await self._requests(client_in, client_out, rgw_out)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # the client or RGW went away, or sent what is not HTTP: drop both sides
        finally:
            rgw_out.close()
            await asyncio.wait([responses], timeout=30)
            responses.cancel()
            client_out.close()

    async def _requests(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter,
                        rgw_out: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await client_in.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as end:
                if end.partial:
                    raise
                return  # the client closed between requests
            length = body_length(head)
            head = unquote_if_match(head, self.signer)
            if length is not None and length <= _MAX_CHECKED_WRITE and is_conditional_write(head):
                # The client sends its next request only once it has this answer
                # (no pipelining), so answering from another connection keeps the order.
                body = await client_in.readexactly(length)
                client_out.write(await self._conditional_write(head, body))
                await client_out.drain()
                continue
            rgw_out.write(head)
            if length is None:
                await _copy_chunked(client_in, rgw_out)
            else:
                await _copy(client_in, rgw_out, length)


    async def _conditional_write(self, head: bytes, body: bytes) -> bytes:
        """RGW's answer to a conditional write, or 200 when a 412 only means
        that an earlier try of this very write was stored."""
        response = await self._exchange(head + body)
        if not response.startswith((b"HTTP/1.1 412", b"HTTP/1.0 412")):
            return response
        check = head_request(head, self.signer)
        if check is None:
            return response
        found = await self._exchange(check, head_only=True)
        etag = etag_of(found)
        if not found.startswith(b"HTTP/1.1 200") or etag != hashlib.md5(body, usedforsecurity=False).hexdigest():
            return response
        log.info("a conditional write found its own bytes already stored (an earlier try was answered by "
                 "nobody): answered 200 for %s", _parse(head)[0].split(" ")[1])
        return f'HTTP/1.1 200 OK\r\nETag: "{etag}"\r\nContent-Length: 0\r\n\r\n'.encode()

    async def _exchange(self, request: bytes, head_only: bool = False) -> bytes:
        """One request to RGW on a connection of its own; its whole response."""
        reader, writer = await asyncio.open_connection(HOST, self.rgw_port, limit=_HEAD_LIMIT)
        try:
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            if head_only:
                return head
            length = body_length(head)
            if length is None:
                raise ValueError("a chunked answer to a conditional write")
            return head + await reader.readexactly(length)
        finally:
            writer.close()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, length: int) -> None:
    while length:
        data = await reader.read(min(length, _CHUNK))
        if not data:
            raise asyncio.IncompleteReadError(b"", length)
        writer.write(data)
        length -= len(data)
        await writer.drain()
    await writer.drain()


async def _copy_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        size_line = await reader.readuntil(b"\r\n")
        writer.write(size_line)
        size = int(size_line.split(b";")[0], 16)
        if size == 0:  # trailers, then the blank line
            while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                writer.write(line)
            writer.write(line)
            await writer.drain()
            return
        await _copy(reader, writer, size + 2)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m streamml.stack.rgw_proxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--rgw-port", type=int, required=True)
    parser.add_argument("--keys", type=Path, required=True, help="JSON file with access_key and secret_key")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s rgw-proxy %(message)s")
    try:
        keys = json.loads(args.keys.read_text())
        signer = SigV4(keys["access_key"], keys["secret_key"])
    except (OSError, ValueError, KeyError) as error:
        raise SystemExit(f"rgw-proxy: cannot read the S3 keys from {args.keys}: {type(error).__name__}")

    async def run() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        await Proxy(args.listen_port, args.rgw_port, signer).serve(stopping)

    asyncio.run(run())


if __name__ == "__main__":
    main()
