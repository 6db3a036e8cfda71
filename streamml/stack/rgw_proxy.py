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
key. Every other byte, and every request without a quoted ``If-Match``,
passes through untouched; responses are not parsed at all.

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


def unquote_if_match(head: bytes, signer: SigV4) -> bytes:
    """The request head with a quoted If-Match unquoted and signed again;
    unchanged when there is nothing to fix or the signature does not verify."""
    lines = head.decode("latin-1").split("\r\n")
    request_line, header_lines = lines[0], [line for line in lines[1:] if line]
    headers = [(name.strip(), value.strip()) for name, _, value in (h.partition(":") for h in header_lines)]
    at = next((i for i, (n, v) in enumerate(headers)
               if n.lower() == "if-match" and len(v) > 2 and v[0] == v[-1] == '"'), None)
    auth = next((i for i, (n, _) in enumerate(headers) if n.lower() == "authorization"), None)
    if at is None or auth is None:
        return head
    parsed = parse_authorization(headers[auth][1])
    if parsed is None or parsed[0] != signer.access_key:
        return head
    _, scope, signed, signature = parsed
    method, target = request_line.split(" ", 2)[:2]
    target = urlsplit(target)._replace(scheme="", netloc="").geturl() if "://" in target else target
    if not hmac.compare_digest(signer.signature(method, target, headers, scope, signed), signature):
        log.warning("a request with a quoted If-Match is not signed by the stack's key; passed on unchanged")
        return head
    headers[at] = (headers[at][0], headers[at][1][1:-1])
    new_signature = signer.signature(method, target, headers, scope, signed)
    headers[auth] = (headers[auth][0], headers[auth][1].replace(signature, new_signature))
    return "\r\n".join([request_line, *(f"{n}: {v}" for n, v in headers), "", ""]).encode("latin-1")


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
            await self._requests(client_in, rgw_out)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # the client or RGW went away, or sent what is not HTTP: drop both sides
        finally:
            rgw_out.close()
            await asyncio.wait([responses], timeout=30)
            responses.cancel()
            client_out.close()

    async def _requests(self, client_in: asyncio.StreamReader, rgw_out: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await client_in.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as end:
                if end.partial:
                    raise
                return  # the client closed between requests
            length = body_length(head)
            rgw_out.write(unquote_if_match(head, self.signer))
            if length is None:
                await _copy_chunked(client_in, rgw_out)
            else:
                await _copy(client_in, rgw_out, length)


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
