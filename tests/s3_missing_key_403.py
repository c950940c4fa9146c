"""An S3 that answers a missing key with 403, as AWS does without s3:ListBucket: a threaded HTTP
proxy on 127.0.0.1 in front of the moto server (which answers 404 to every caller)."""

from __future__ import annotations

import http.client
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from urllib.parse import unquote, urlsplit

ACCESS_DENIED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
                 b"<Message>Access Denied</Message><RequestId>0</RequestId><HostId>0</HostId></Error>")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}


@dataclass
class MissingKey403S3:
    """The proxy's endpoint, and the (method, "bucket/key") of every read it answered with 403."""

    endpoint: str
    denied: list[tuple[str, str]] = field(default_factory=list)

    def denied_keys(self) -> set[str]:
        return {key for _, key in self.denied}


@contextmanager
def s3_answering_missing_keys_with_403(upstream: str) -> Iterator[MissingKey403S3]:
    """Forward every request to the S3 at `upstream` (a moto server's URL) unchanged, except a GET or
    HEAD of an object that answers 404 (NoSuchKey): that answers 403 AccessDenied instead.

    AWS's rule (S3 API reference, GetObject: "If you don't have the s3:ListBucket permission, Amazon
    S3 returns an HTTP status code 403 Access Denied error"; with it, 404 NoSuchKey). The simplest
    honest version: 403 to every caller, since the trainer's role never has an unconditional
    s3:ListBucket (its grant carries an s3:prefix condition, which a GET does not). Listings
    (ListObjectsV2), writes and deletes pass through as moto answers them."""
    parts = urlsplit(upstream)
    proxy = MissingKey403S3(endpoint="")
    handler = type("Handler", (_Forward,), {"upstream": (parts.hostname, parts.port), "proxy": proxy})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    proxy.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="s3-403-proxy", daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()


class _Forward(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as boto3's connection pool expects
    upstream: tuple[str, int]
    proxy: MissingKey403S3

    def do_GET(self) -> None:
        self._forward()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    def log_message(self, *args) -> None:
        pass

    def _forward(self) -> None:
        body = self._request_body()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}  # Host kept: signed
        connection = http.client.HTTPConnection(*self.upstream, timeout=120)
        try:
            connection.request(self.command, self.path, body=body, headers=headers)
            answer = connection.getresponse()
            status, data = answer.status, answer.read()
            answer_headers = [(k, v) for k, v in answer.getheaders() if k.lower() not in _HOP_BY_HOP]
            head_length = answer.getheader("Content-Length", "0")  # a HEAD's: the object's size
        finally:
            connection.close()
        key = self._object_key()
        if status == 404 and key and (self.command == "HEAD" or b"<Code>NoSuchKey</Code>" in data):
            self.proxy.denied.append((self.command, key))
            status, data, head_length = 403, ACCESS_DENIED, "0"
            answer_headers = [("Content-Type", "application/xml")]
        self.send_response(status)
        for name, value in answer_headers:
            self.send_header(name, value)
        self.send_header("Content-Length", head_length if self.command == "HEAD" else str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _object_key(self) -> str | None:
        """"bucket/key" of a path-style object request (GET/HEAD), None for a bucket or a listing."""
        if self.command not in ("GET", "HEAD"):
            return None
        bucket, _, key = unquote(urlsplit(self.path).path).lstrip("/").partition("/")
        return f"{bucket}/{key}" if bucket and key else None

    def _request_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None
