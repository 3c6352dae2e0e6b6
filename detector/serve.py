"""A static file server with HTTP Range requests: ``python -m detector.serve DIR [--port N]``.

Cloud-Optimized GeoTIFFs are read by byte ranges (GDAL's ``/vsicurl/`` asks for a few
ranges per request), which ``python -m http.server`` does not answer. This one does:
single ranges (``206``), several ranges in one request (``multipart/byteranges``) and
``HEAD``; it serves only files under ``DIR`` and counts the bytes of file data it sends,
so the README examples and the loopback tests (``tests/test_remote.py``) can serve a
folder of COGs and STAC JSON on 127.0.0.1, and the benchmark can tell how much of a
scene a run fetched.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import threading
import uuid
from collections.abc import Callable
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

_RANGE = re.compile(r"\s*(\d*)\s*-\s*(\d*)\s*")
# Tests break the server on purpose: fault(path, sent bytes) -> "drop" | HTTP status | None.
Fault = Callable[[str, int], "str | int | None"]


def parse_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """Byte ranges of a ``Range: bytes=...`` header as inclusive (start, end) pairs.

    Returns None for a header that is not a byte-range set (serve the whole file) and an
    empty list when no range overlaps the file (416).
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not spec:
        return None
    out = []
    for part in spec.split(","):
        match = _RANGE.fullmatch(part)
        if match is None or match.group(1) == match.group(2) == "":
            return None
        first, last = match.group(1), match.group(2)
        if first == "":  # suffix range: the last N bytes
            start, end = max(0, size - int(last)), size - 1
        else:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
        if start <= end and start < size:
            out.append((start, end))
    return out


class RangeServer(ThreadingHTTPServer):
    """A threaded HTTP server over ``root`` that tallies the file bytes it sends.

    Attributes:
        bytes_sent: file bytes sent since the start (or the last :meth:`reset`).
        requests: GET requests answered.
        fault: optional hook that makes a request fail (tests: drops and HTTP errors).
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: str | Path, host: str = "127.0.0.1", port: int = 0,
                 quiet: bool = True):
        self.root = Path(root).resolve()
        self.quiet = quiet
        self.bytes_sent = 0
        self.requests = 0
        self.fault: Fault | None = None
        self._lock = threading.Lock()
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the server."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def count(self, n: int) -> None:
        with self._lock:
            self.bytes_sent += n

    def reset(self) -> None:
        """Zero the byte and request tallies."""
        with self._lock:
            self.bytes_sent = 0
            self.requests = 0

    def start(self) -> RangeServer:
        """Serve in a background daemon thread; returns self."""
        threading.Thread(target=self.serve_forever, name="range-server", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.shutdown()
        self.server_close()


class _Handler(SimpleHTTPRequestHandler):
    server: RangeServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        if not self.server.quiet:
            super().log_message(format, *args)

    def _file(self) -> Path | None:
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        path = (self.server.root / rel).resolve()
        if not path.is_relative_to(self.server.root) or not path.is_file():
            return None
        return path

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._serve(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        path = self._file()
        if path is None:
            self._status(HTTPStatus.NOT_FOUND)
            return
        fault = self.server.fault(self.path, self.server.bytes_sent) if self.server.fault \
            else None
        if fault == "drop":  # the connection dies without an answer
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if isinstance(fault, int):
            self._status(HTTPStatus(fault))
            return
        size = path.stat().st_size
        header = self.headers.get("Range")
        ranges = parse_ranges(header, size) if header else None
        if body:
            with self.server._lock:
                self.server.requests += 1
        if ranges is None:
            self._send(path, HTTPStatus.OK, [(0, size - 1)] if size else [], size, body)
        elif not ranges:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(path, HTTPStatus.PARTIAL_CONTENT, ranges, size, body)

    def _status(self, status: HTTPStatus) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, path: Path, status: HTTPStatus, ranges: list[tuple[int, int]], size: int,
              body: bool) -> None:
        ctype = self.guess_type(str(path))
        self.send_response(status)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Last-Modified", self.date_time_string(int(path.stat().st_mtime)))
        if status == HTTPStatus.OK or len(ranges) == 1:
            start, end = ranges[0] if ranges else (0, -1)
            if status == HTTPStatus.PARTIAL_CONTENT:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(end - start + 1))
            self.end_headers()
            if body:
                self._copy(path, [(start, end)], [b""] * 2)
            return
        boundary = uuid.uuid4().hex
        heads = [(f"--{boundary}\r\nContent-Type: {ctype}\r\n"
                  f"Content-Range: bytes {s}-{e}/{size}\r\n\r\n").encode() for s, e in ranges]
        tail = f"\r\n--{boundary}--\r\n".encode()
        length = sum(len(h) + e - s + 1 + 2 for h, (s, e) in zip(heads, ranges, strict=True))
        self.send_header("Content-Type", f"multipart/byteranges; boundary={boundary}")
        self.send_header("Content-Length", str(length + len(tail) - 2))
        self.end_headers()
        if body:
            self._copy(path, ranges, heads, tail)

    def _copy(self, path: Path, ranges: list[tuple[int, int]], heads: list[bytes],
              tail: bytes = b"") -> None:
        multi = len(ranges) > 1
        with open(path, "rb") as handle:
            for k, (start, end) in enumerate(ranges):
                if multi:
                    self.wfile.write((b"\r\n" if k else b"") + heads[k])
                handle.seek(start)
                left = end - start + 1
                while left > 0:
                    chunk = handle.read(min(left, 1 << 16))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    self.server.count(len(chunk))
                    left -= len(chunk)
            if multi:
                self.wfile.write(tail)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """``python -m detector.serve DIR [--host 127.0.0.1] [--port 8000]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="folder to serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    if not os.path.isdir(args.root):
        raise SystemExit(f"error: {args.root}: not a folder; give the folder to serve")
    server = RangeServer(args.root, args.host, args.port, quiet=False)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill PID` stops it as Ctrl-C does
    print(f"serving {server.root} at {server.url}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        print(f"sent {server.bytes_sent} bytes of file data", flush=True)


if __name__ == "__main__":
    main()
