"""One rule for reading a response header from either Locust client, and how a redirect's Location is shown."""
from __future__ import annotations

from typing import Any
from urllib.parse import quote, urljoin, urlsplit


def header(headers: Any, name: str) -> str | None:
    """The header's value, or None. geventhttpclient hands a header given more than once as a list: it counts
    only when every copy agrees (two different Content-Lengths or Content-Types mean none is known)."""
    if headers is None:
        return None
    value = headers.get(name)
    if isinstance(value, list):
        return value[0] if value and all(item == value[0] for item in value) else None
    return value


MAX_LOCATION_CHARS = 120


def describe_location(location: object, request_url: str | None = None) -> str:
    """A redirect's Location as every output may show it: percent-encoded (no control character, space or markup
    character survives), at most MAX_LOCATION_CHARS, and whether it leaves the origin of the request."""
    if not isinstance(location, str) or not location.strip():
        return "no Location"
    text = quote(location.strip(), safe=":/?#[]@!$&'()*+,;=%~-._")
    if len(text) > MAX_LOCATION_CHARS:
        text = text[:MAX_LOCATION_CHARS - 1] + "…"
    if not request_url:
        return text
    try:
        target, source = urlsplit(urljoin(request_url, location.strip())), urlsplit(request_url)
        same = (target.scheme, target.hostname, target.port) == (source.scheme, source.hostname, source.port)
    except ValueError:  # a bracket or port no URL parser accepts
        return f"{text} (not a URL)"
    return f"{text} ({'this origin' if same else 'another origin'})"
