"""The contract's JSON envelopes, encoded to bytes once where the content never changes."""
from __future__ import annotations

import json
from typing import Any

from aiohttp import web

CORS_ORIGIN = {"Access-Control-Allow-Origin": "*"}
JSON_HEADERS = {"Content-Type": "application/json", **CORS_ORIGIN}

VALIDATION_ERROR = "VALIDATION_ERROR"
INSUFFICIENT_STOCK = "INSUFFICIENT_STOCK"
RESOURCE_NOT_FOUND = "RESOURCE_NOT_FOUND"
DATABASE_ERROR = "DATABASE_ERROR"
UNKNOWN_ERROR = "UNKNOWN_ERROR"

INTERNAL_ERROR_MESSAGE = "An internal server error occurred."
DATABASE_ERROR_MESSAGE = "A database error occurred."
TOO_MANY_CONNECTIONS = "Too many open connections; retry shortly"


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON; a lone surrogate that slipped through becomes '?' instead of a crash."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "replace")


def success_body(data: Any) -> bytes:
    return b'{"status":"success","data":' + dumps(data) + b"}"


def error_body(code: str, message: str) -> bytes:
    return dumps({"status": "error", "error": {"code": code, "message": message}})


def json_response(body: bytes, status: int = 200, extra_headers: dict[str, str] | None = None) -> web.Response:
    headers = JSON_HEADERS if extra_headers is None else {**JSON_HEADERS, **extra_headers}
    return web.Response(body=body, status=status, headers=headers)


class ApiError(Exception):
    """An answer in the error envelope; raised by handlers, turned into a response by the dispatcher."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None, *,
                 close: bool = False) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers, self.close = status, code, message, headers, close

    def response(self) -> web.Response:
        response = json_response(error_body(self.code, self.message), self.status, self.headers)
        if self.close:
            response.force_close()
        return response


HEALTH_BODY = b'{"status":"ok"}'
STOCK_UPDATED_BODY = success_body({"message": "Stock updated successfully"})
EMPTY_LIST_BODY = success_body([])
INTERNAL_ERROR_BODY = error_body(UNKNOWN_ERROR, INTERNAL_ERROR_MESSAGE)
DATABASE_ERROR_BODY = error_body(DATABASE_ERROR, DATABASE_ERROR_MESSAGE)
MISSING_CATEGORY = ApiError(400, VALIDATION_ERROR, "Missing 'category' query parameter")
INVALID_BODY = ApiError(400, VALIDATION_ERROR, "Invalid request body format")


def validation_failed(field: str, tag: str) -> ApiError:
    """The Go validator's message shape, e.g. Field 'Name' failed validation on 'required' tag."""
    return ApiError(400, VALIDATION_ERROR, f"Validation failed: Field '{field}' failed validation on '{tag}' tag")


def product_not_found(name: str) -> ApiError:
    return ApiError(404, RESOURCE_NOT_FOUND, f"Product with name '{name}' not found")


def insufficient_stock(name: str, available: int, requested: int) -> ApiError:
    return ApiError(400, INSUFFICIENT_STOCK,
                    f"Insufficient stock for product '{name}'. Available: {available}, Requested: {requested}")
