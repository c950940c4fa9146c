"""A Hugging Face Hub stand-in on 127.0.0.1 for tests (conftest keeps the real Hub offline): it
answers GET and HEAD from `answer(path) -> (body, headers) | None`, ranged GETs with 206 and the
asked bytes, an unknown path with the Hub's 404 (X-Error-Code: EntryNotFound), and records each
request as "METHOD PATH" (plus " RANGE" when one was asked)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Answer = Callable[[str], "tuple[bytes, dict[str, str]] | None"]


@contextmanager
def serve_hub(answer: Answer) -> Iterator[tuple[str, list[str]]]:
    """(endpoint, requests seen) of a Hub serving `answer` until the block ends."""
    seen: list[str] = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            asked = self.headers.get("range")
            seen.append(f"{self.command} {self.path}" + (f" {asked}" if asked else ""))
            found = answer(self.path)
            if found is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body, headers = found
            status = 200
            if asked:
                first, last = asked.removeprefix("bytes=").split("-")
                body, status = body[int(first):int(last) + 1], 206
            self.send_response(status)
            for header, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(header, value)
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(body)

        do_HEAD = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", seen
    finally:
        server.shutdown()
        server.server_close()
