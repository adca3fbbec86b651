"""Bounded response bodies for the Locust users' clients: a hostile or broken target cannot make the generator
read without end.

Both Locust clients read each answer's whole body into memory (Locust records its length), and a gevent
socket with data waiting returns it without yielding to the event loop. An endless or huge answer (a
firehose, a gzip bomb) would so grow the generator's memory without bound and starve its timers, the end of
the run among them: measured before this module, 1 user against an endless chunked answer grew to 10 GB in
80 s and ran on past its 8-s run time until killed. Here every body is read up to `service.max_response_mib`
(counted after decoding, so a compressed bomb counts by what it inflates to); beyond it the connection is
closed and the request fails with the reason `too_large`. A body in an unknown Content-Encoding is handed over
undecoded by both clients alike. An answer whose Content-Length is within the limit
and that is not encoded (the service's own answers) is read in one call, as Locust reads it.
"""
from __future__ import annotations

import functools
import zlib
from typing import Any

import brotli
from geventhttpclient import client as ghc_client
from geventhttpclient.response import HTTPSocketPoolResponse
from locust.contrib.fasthttp import FastResponse
from requests.exceptions import RequestException

from .headers import header

BLOCK_BYTES = 64 * 1024
MAX_HEAD_BYTES = 1024 * 1024  # status line and headers of one answer (Go's http.Server default)


class ResponseTooLarge(RequestException):
    """The answer's body is over the limit. A RequestException is an OSError: both Locust clients record it as the
    request's failure (FastHttpSession's FAILURE_EXCEPTIONS include OSError; HttpSession catches RequestException).
    `answer_too_large` marks it for the checks, which recognise exceptions by attribute, not by import."""

    answer_too_large = True


def _limit_text(limit: int) -> str:
    return f"{limit / 2**20:g} MiB" if limit >= 2**20 else f"{limit:,} bytes"


def too_large(limit: int, announced: int | None = None) -> ResponseTooLarge:
    said = f" (Content-Length {announced:,})" if announced is not None else ""
    return ResponseTooLarge(f"answer larger than {_limit_text(limit)}{said}: service.max_response_mib")


class _Inflater:
    """gzip / deflate / br, decoded in steps that never produce more than the room left (a bomb stops at the limit)."""

    __slots__ = ("_decoder", "_kind")

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._decoder: Any = None

    def _make(self, first: bytes):
        if self._kind == "br":
            return brotli.Decompressor()
        if self._kind == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        # deflate: the zlib format (RFC 1950) as it should be, or the raw deflate some servers send
        zlib_header = len(first) >= 2 and first[0] & 0x0F == 8 and ((first[0] << 8) | first[1]) % 31 == 0
        return zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)

    def feed(self, data: bytes, room: int) -> bytes:
        """Decoded bytes of `data`; more than `room` of them means over the limit (the rest is never made)."""
        if self._decoder is None:
            self._decoder = self._make(data)
        if self._kind == "br":
            decoder = self._decoder
            out = decoder.process(data, output_buffer_limit=room + 1)
            while len(out) <= room and not decoder.can_accept_more_data():  # output still pending inside
                more = decoder.process(b"", output_buffer_limit=room + 1 - len(out))
                if not more:
                    break
                out += more
            return out
        out = self._decoder.decompress(data, room + 1)
        return out + b"x" if self._decoder.unconsumed_tail else out

    def flush(self, room: int) -> bytes:
        if self._decoder is None or self._kind == "br":
            return b""
        return self._decoder.flush()[:room + 1]


def _inflater(encoding: str) -> _Inflater | None:
    """The decoder of a Content-Encoding; None for identity and for an encoding no client knows, whose body is
    then handed over as it came, as requests (urllib3) does (geventhttpclient would raise a ValueError out of
    the request: a traceback instead of a failure), and the checks judge it."""
    if encoding in ("gzip", "x-gzip"):
        return _Inflater("gzip")
    if encoding in ("deflate", "br"):
        return _Inflater(encoding)
    return None


def _content_length(headers: Any) -> int | None:
    value = header(headers, "content-length")
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class BoundedFastResponse(FastResponse):
    """FastHttpUser's response with the body read up to `max_bytes` (set per session by `bound_fast_session`)."""

    max_bytes = 16 * 2**20

    def _content(self):
        headers = self.headers
        if headers is None:
            return None
        raw = self._response
        limit = self.max_bytes
        encodings = headers.getlist("content-encoding")
        encoding = encodings[0].strip().lower() if encodings else "identity"
        announced = _content_length(headers)
        if encoding == "identity" and announced is not None and announced <= limit:
            body = raw.read()  # the common case, as Locust reads it: the parser stops at Content-Length
            self.release()
            return body
        try:
            if announced is not None and encoding == "identity" and raw.method != "HEAD" and \
                    raw.get_code() not in (204, 304):  # those announce a length but have no body
                raise too_large(limit, announced)  # refused before a byte of it is read
            inflater = _inflater(encoding)
            parts: list[bytes] = []
            size = 0
            while True:
                block = raw.read(BLOCK_BYTES)
                if not block:
                    break
                if inflater is not None:
                    block = inflater.feed(block, limit - size)
                size += len(block)
                if size > limit:
                    raise too_large(limit)
                parts.append(block)
            if inflater is not None:
                tail = inflater.flush(limit - size)
                size += len(tail)
                if size > limit:
                    raise too_large(limit)
                parts.append(tail)
        except RequestException:
            raw.release()  # the message is not complete: the pool closes the connection instead of reusing it
            self._response = _Spent(raw)  # a second read (Locust's ResponseContextManager copies this) is empty
            raise
        self.release()
        return b"".join(parts)


class _Spent:
    """A response whose body was refused: no more bytes, the status and headers as they were."""

    __slots__ = ("_raw",)

    def __init__(self, raw) -> None:
        self._raw = raw

    def read(self, _length: int | None = None) -> bytes:
        return b""

    def release(self) -> None:
        pass

    def __getattr__(self, name: str):
        return getattr(self._raw, name)


class ResponseHeadTooLarge(OSError):
    """The answer's status line and headers are over MAX_HEAD_BYTES (geventhttpclient sets no bound of its own;
    requests' http.client stops at 100 headers or a 64-KiB line). An OSError, which FastHttpSession records as the
    request's failure; not a RequestException, whose `response` attribute (None) FastHttpSession would use."""

    answer_too_large = True


class _BoundedHeadResponse(HTTPSocketPoolResponse):
    """geventhttpclient's response with its head bounded: until the headers are complete, the bytes fed to the
    parser (one recv block of 4 KiB at a time) are counted, so a head that never ends fails instead of growing
    without end. One check per block, none per header."""

    _head_bytes = 0

    def feed(self, data) -> None:
        if not self.headers_complete:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                raise ResponseHeadTooLarge(f"answer head (status line and headers) larger than "
                                           f"{_limit_text(MAX_HEAD_BYTES)}")
        super().feed(data)


def _bound_heads() -> None:
    """geventhttpclient's HTTPClient makes its responses from this module global: point it at the bounded one
    (idempotent; FastHttpUser is the only user of geventhttpclient in the generator)."""
    if ghc_client.HTTPSocketPoolResponse is not _BoundedHeadResponse:
        ghc_client.HTTPSocketPoolResponse = _BoundedHeadResponse


@functools.lru_cache(maxsize=8)
def _fast_response_class(max_bytes: int) -> type:
    return type("BoundedFastResponse", (BoundedFastResponse,), {"max_bytes": max_bytes})


def bound_fast_session(session, max_bytes: int) -> None:
    """Make a FastHttpSession read every body through BoundedFastResponse with this limit, and every head within
    MAX_HEAD_BYTES (once per user)."""
    _bound_heads()
    session.client.response_type = _fast_response_class(max_bytes)


class _BoundedRaw:
    """A urllib3 response whose stream() stops at the limit: requests reads every body through stream()."""

    __slots__ = ("_raw", "_limit")

    def __init__(self, raw, limit: int) -> None:
        self._raw = raw
        self._limit = limit

    def stream(self, amt: int = 2**16, decode_content: bool | None = None):
        size = 0
        for chunk in self._raw.stream(amt, decode_content=decode_content):
            size += len(chunk)
            if size > self._limit:
                self._raw.close()  # the rest of the answer is never read; the connection is not reused
                raise too_large(self._limit)
            yield chunk

    def __getattr__(self, name: str):
        return getattr(self._raw, name)


def bound_requests_session(session, max_bytes: int) -> None:
    """Make a requests-based HttpSession read every body through _BoundedRaw with this limit (once per user)."""
    for adapter in session.adapters.values():
        build = adapter.build_response

        def build_response(request, response, _build=build):
            built = _build(request, response)
            built.raw = _BoundedRaw(built.raw, max_bytes)
            return built

        adapter.build_response = build_response


def with_timeout(request, timeout: float):
    """Give every request of a requests-based session the configured timeout (requests has no default)."""
    def request_with_timeout(method, url, **kwargs):
        kwargs.setdefault("timeout", timeout)
        return request(method, url, **kwargs)
    return request_with_timeout
