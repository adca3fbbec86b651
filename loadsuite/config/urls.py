"""Target URLs, normalised once: scheme and host checked, trailing slashes removed, a path prefix kept.

User info (http://user:secret@host) is refused: a password in a URL ends up in logs, reports and the
process list. Put credentials in a reverse proxy or a header instead.
"""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def normalise_base_url(text: str) -> str:
    """'http://127.0.0.1:8082/' -> 'http://127.0.0.1:8082'; 'http://h/api/' -> 'http://h/api'; ValueError says why."""
    text = text.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"must be a URL like http://127.0.0.1:8082, got {_redacted(text)!r}")
    if "@" in parts.netloc:
        raise ValueError(f"{_redacted(text)!r} carries user info: credentials in a URL are refused "
                         "(they would be printed and stored); remove them")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r} has an invalid port: use a number from 1 to 65535") from None
    if not parts.hostname:
        raise ValueError(f"{text!r} has no host name: use e.g. http://127.0.0.1:8082")
    if parts.query or parts.fragment:
        raise ValueError(f"{text!r} has a query or fragment: give only scheme, host, port and an optional path")
    if port == 0:
        raise ValueError(f"{text!r} has port 0: use a number from 1 to 65535")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def redact(text: str) -> str:
    """A URL with any user info replaced by ***, for messages."""
    return _redacted(text)


def _redacted(text: str) -> str:
    parts = urlsplit(text)
    if "@" not in parts.netloc:
        return text
    return urlunsplit((parts.scheme, "***@" + parts.netloc.rpartition("@")[2], parts.path, parts.query, parts.fragment))
