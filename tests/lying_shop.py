"""A shop that speaks the contract's HTTP but lies in chosen ways: a target for the third fault matrix (issue 31).

Run as its own process: `python tests/lying_shop.py PORT [options]` (0: any free port); it prints `ready PORT` when it
listens. Plain
threads, no gevent. Without options it is an honest (unlocked, single-process) shop of 20 products in 5
categories. Each option is one lie:

  --hostile-names        product names with terminal escapes, C0/C1 controls, bidi overrides, HTML, Markdown and
                         spreadsheet formulas (the first by sort order, the flash sale's product, has them all)
  --lose-every-buy       a buy succeeds and reports remainingStock, but the stock never changes (every second buy
                         of a product is a lost update the oracle must name)
  --redirect PATH=URL    GET PATH answers 302 with Location URL (e.g. /products=http://127.0.0.1:OTHER/products)
  --warm-up S            every request answers 503 for S seconds from the first one (a service still starting)
  --empty-categories     GET /products/category answers [] for every category, while /products lists them all
  --details-price-off    POST /products/details answers the product with another price than /products lists
  --string-stock         GET /products lists every stock as a string ("5"), the other endpoints as numbers
  --slow-products S      every GET /products waits S seconds before it answers

`GET /__requests` answers how many requests it served before (the test's own question is not counted).
`running(*options)` starts one for a test and yields its URL.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

CATEGORIES = ("Books", "Electronics", "Apparel", "Kitchenware", "Furniture")
# The first by sort order (the flash sale's best-seller, so certainly in the evidence) carries every kind of harm.
HOSTILE = ("\x01\x1b[2J\x1b[31m</script><svg onload=alert(1)> Red Alert", "</script><svg onload=alert(1)>", "Ctrl\x01\x02\x03\x04\x05\x06\x07\x08 Tool",
           "=cmd|' /C calc'!A0", "Bidi \u202egnp.exe", "C1 \x9b2J \x85 Lamp", "| Pipe [x](javascript:alert(1)) *bold*",
           "&amp; <b>bold</b>")


def catalogue(hostile: bool) -> dict[str, dict]:
    names = [f"{category} item {i}" for category in CATEGORIES for i in range(1, 5)]
    if hostile:
        names[:len(HOSTILE)] = HOSTILE
    return {name: {"name": name, "description": f"about {name}", "price": 10.0 + i, "stock": 500,
                   "category": CATEGORIES[i % len(CATEGORIES)]} for i, name in enumerate(names)}


class Shop:
    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.products = catalogue(options.hostile_names)
        self.redirects = dict(item.split("=", 1) for item in options.redirect)
        self.first_request: float | None = None
        self.lock = threading.Lock()
        self.served = 0

    def answer(self, method: str, path: str, query: dict, body: object) -> tuple[int, object, dict]:
        options = self.options
        if path == "/__requests":
            return 200, {"requests": self.served}, {}
        with self.lock:
            self.served += 1
            self.first_request = self.first_request or time.monotonic()
        if time.monotonic() - self.first_request < options.warm_up:
            return 503, {"status": "error", "error": {"code": "UNKNOWN_ERROR", "message": "starting"}}, {}
        if method == "GET" and path in self.redirects:
            return 302, None, {"Location": self.redirects[path]}
        if method == "GET" and path == "/health":
            return 200, {"status": "ok"}, {}
        if method == "GET" and path == "/products":
            if options.slow_products:
                time.sleep(options.slow_products)
            listed = [dict(p, stock=str(p["stock"])) if options.string_stock else dict(p)
                      for p in self.products.values()]
            return 200, {"status": "success", "data": listed}, {}
        if method == "GET" and path == "/products/category":
            category = (query.get("category") or [""])[0]
            if not category:
                return 400, error("VALIDATION_ERROR", "Missing 'category' query parameter"), {}
            found = [] if options.empty_categories else [dict(p) for p in self.products.values()
                                                          if p["category"] == category]
            return 200, {"status": "success", "data": found}, {}
        if path not in ("/products/details", "/products/stock", "/products/buy"):
            return 404, error("RESOURCE_NOT_FOUND", "not found"), {}
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"]:
            return 400, error("VALIDATION_ERROR", "Invalid request body format"), {}
        product = self.products.get(body["name"])
        if product is None:
            return 404, error("RESOURCE_NOT_FOUND", f"Product with name '{body['name']}' not found"), {}
        if method == "POST" and path == "/products/details":
            shown = dict(product, price=product["price"] + 1) if options.details_price_off else dict(product)
            return 200, {"status": "success", "data": shown}, {}
        if method == "PATCH" and path == "/products/stock":
            stock = body.get("stock")
            if type(stock) is not int or stock <= 0:
                return 400, error("VALIDATION_ERROR", "Invalid request body format"), {}
            with self.lock:
                product["stock"] = stock
            return 200, {"status": "success", "data": {"message": "Stock updated successfully"}}, {}
        if method == "POST" and path == "/products/buy":
            quantity = body.get("quantity")
            if type(quantity) is not int or quantity <= 0:
                return 400, error("VALIDATION_ERROR", "Invalid request body format"), {}
            with self.lock:
                stock = product["stock"]
                if quantity > stock:
                    return 400, error("INSUFFICIENT_STOCK", f"Insufficient stock for product '{product['name']}'. "
                                      f"Available: {stock}, Requested: {quantity}"), {}
                if not options.lose_every_buy:
                    product["stock"] = stock - quantity
            return 200, {"status": "success", "data": {"productName": product["name"], "quantity": quantity,
                                                       "remainingStock": stock - quantity}}, {}
        return 404, error("RESOURCE_NOT_FOUND", "not found"), {}


def error(code: str, message: str) -> dict:
    return {"status": "error", "error": {"code": code, "message": message}}


def handler_for(shop: Shop) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args) -> None:
            pass

        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(min(length, 1 << 16)) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            status, payload, headers = shop.answer(self.command, url.path, parse_qs(url.query), body)
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

    return Handler


@contextlib.contextmanager
def running(*options: str) -> Iterator[str]:
    """A lying shop on a free port of 127.0.0.1 for the duration of the block; yields its URL."""
    proc = subprocess.Popen([sys.executable, str(Path(__file__)), "0", *options], stdout=subprocess.PIPE, text=True)
    try:
        ready, _, port = proc.stdout.readline().partition(" ")  # "ready PORT" once it listens, or nothing: it exited
        if ready != "ready":
            raise RuntimeError(f"lying_shop.py {' '.join(options)} did not start (exit {proc.wait(timeout=5)})")
        yield f"http://127.0.0.1:{int(port)}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def served(url: str) -> int:
    """How many requests the lying shop at url has served."""
    import urllib.request
    with urllib.request.urlopen(url + "/__requests", timeout=5) as answer:
        return json.loads(answer.read())["requests"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--hostile-names", action="store_true")
    parser.add_argument("--lose-every-buy", action="store_true")
    parser.add_argument("--redirect", action="append", default=[], metavar="PATH=URL")
    parser.add_argument("--warm-up", type=float, default=0.0, metavar="S")
    parser.add_argument("--empty-categories", action="store_true")
    parser.add_argument("--details-price-off", action="store_true")
    parser.add_argument("--string-stock", action="store_true")
    parser.add_argument("--slow-products", type=float, default=0.0, metavar="S")
    options = parser.parse_args(argv)
    server = ThreadingHTTPServer(("127.0.0.1", options.port), handler_for(Shop(options)))
    server.daemon_threads = True
    print(f"ready {server.server_address[1]}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
