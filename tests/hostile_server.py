"""A hostile HTTP/1.1 server on 127.0.0.1 for the bounded-body tests: answers that never end or inflate without end.

Run as its own process (plain threads, no gevent): `python tests/hostile_server.py PORT [DEFAULT_MODE]`; it prints
`ready` when it listens. `GET /health` answers ok. `GET /<mode>` answers in that mode; any other path in
DEFAULT_MODE (default `firehose`). Every answer stops after MAX_SENT bytes on the wire or when the client
closes, so nothing runs for ever even if a client never stops reading.

Modes, each a 200 with Content-Type application/json:
  firehose      chunked, 64-KiB chunks without end
  huge_length   Content-Length 4 GiB, then bytes without end
  endless_head  a status line, then header lines without end
  head_4gib     Content-Length 4 GiB and no body: the answer to a HEAD request for a large resource
  gzip_bomb     Content-Encoding gzip: 64 MiB of zeros, compressed (about 64 KiB on the wire)
  deflate_bomb  Content-Encoding deflate (zlib format): the same
  br_bomb       Content-Encoding br: the same
  bad_encoding  Content-Encoding x-unheard-of: a valid product list, not encoded at all
  length_ok     a valid product list, Content-Length
  chunked_ok    a valid product list of about 600 KiB, chunked in 7-KiB pieces
  gzip_ok, deflate_ok, raw_deflate_ok, br_ok   a valid product list in that encoding
"""
from __future__ import annotations

import json
import socket
import sys
import threading
import zlib

import brotli

MAX_SENT = 1 << 30
BOMB_BYTES = 64 * 2**20


def product_list(count: int) -> bytes:
    data = [{"name": f"Product {i:05d}", "description": "x" * 40, "price": 12.5, "stock": i % 50,
             "category": "Electronics"} for i in range(count)]
    return json.dumps({"status": "success", "data": data}).encode()


def _gzip(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


SMALL = product_list(20)
LARGE = product_list(6000)
ZEROS = bytes(BOMB_BYTES)
ENCODED = {  # mode: (Content-Encoding, body)
    "gzip_bomb": ("gzip", _gzip(ZEROS)),
    "deflate_bomb": ("deflate", zlib.compress(ZEROS, 9)),
    "br_bomb": ("br", brotli.compress(ZEROS, quality=1)),
    "bad_encoding": ("x-unheard-of", SMALL),
    "length_ok": (None, SMALL),
    "gzip_ok": ("gzip", _gzip(SMALL)),
    "deflate_ok": ("deflate", zlib.compress(SMALL)),
    "raw_deflate_ok": ("deflate", _raw_deflate(SMALL)),
    "br_ok": ("br", brotli.compress(SMALL)),
}
MODES = ("firehose", "huge_length", "endless_head", "head_4gib", "chunked_ok", *ENCODED)
HEALTH = b'{"status":"ok"}'


def _head(extra: str = "", length: int | None = None) -> bytes:
    framing = f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n"
    return f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{framing}{extra}\r\n".encode()


def _answer(conn: socket.socket, mode: str) -> None:
    if mode == "firehose":
        conn.sendall(_head())
        block = b"x" * 65536
        piece = b"%x\r\n" % len(block) + block + b"\r\n"
        for _ in range(MAX_SENT // len(piece)):
            conn.sendall(piece)
        return
    if mode == "huge_length":
        conn.sendall(_head(length=4 * 2**30))
        block = b"x" * 65536
        for _ in range(MAX_SENT // len(block)):
            conn.sendall(block)
        return
    if mode == "head_4gib":
        conn.sendall(_head(length=4 * 2**30))
        return
    if mode == "endless_head":
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        line = b"X-Padding: " + b"x" * 1000 + b"\r\n"
        for _ in range(MAX_SENT // len(line)):
            conn.sendall(line)
        return
    if mode == "chunked_ok":
        conn.sendall(_head())
        for start in range(0, len(LARGE), 7000):
            piece = LARGE[start:start + 7000]
            conn.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
        conn.sendall(b"0\r\n\r\n")
        return
    encoding, body = ENCODED[mode]
    conn.sendall(_head(f"Content-Encoding: {encoding}\r\n" if encoding else "", len(body)) + body)


def _serve(conn: socket.socket, default: str) -> None:
    with conn:
        buffered = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffered:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffered += chunk
                head, _, buffered = buffered.partition(b"\r\n\r\n")
                path = head.split(b"\r\n", 1)[0].split(b" ")[1].decode("latin-1").split("?")[0]
                if path == "/health":
                    conn.sendall(_head(length=len(HEALTH)) + HEALTH)
                    continue
                mode = path.strip("/")
                _answer(conn, mode if mode in MODES else default)
        except OSError:
            return  # the client gave up (closed or reset): the point of most modes


def main() -> int:
    port = int(sys.argv[1])
    default = sys.argv[2] if len(sys.argv) > 2 else "firehose"
    if default not in MODES:
        print(f"unknown mode {default!r}: use one of {', '.join(MODES)}", file=sys.stderr)
        return 2
    server = socket.create_server(("127.0.0.1", port), backlog=64)
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_serve, args=(conn, default), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
