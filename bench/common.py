"""Shared pieces of the load-generator benchmarks: processes, CPU pinning, a canned-response nginx and the request mix.

The canned nginx answers every endpoint of the contract from static strings. It cannot read a request
body, so POST/PATCH answers are chosen by Content-Length: every bench product name has its own length
(12 + 8*i characters), which makes the body of a details, buy or beyond-stock request for each product a
distinct length. `canned_nginx_conf` checks every body the suite can send (tasks, edge cases, invalid
payloads) against those lengths and reports the few that collide (their validators then fail).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from loadsuite import catalogue  # noqa: E402 - after the path
from loadsuite.cli.ports import free_port  # noqa: E402,F401 - the benchmarks import it from here

CATEGORY_SIZES = {"Books": 6, "Electronics": 4, "Apparel": 4, "Kitchenware": 3, "Furniture": 3}
CANNED_STOCK = 1000  # every product's stock, and every buy's remainingStock (the oracle will call it lost updates)
BENCH_STOCK_UPDATE = 100_000  # the bench config's only stock value: its body length collides with no invalid payload
UNKNOWN_PRODUCT = "ProductThatWillNeverExist123"  # config.yaml's test_data.non_existent_product_name



# Processes ------------------------------------------------------------------------------------------

def fail(message: str, code: int = 2) -> None:
    print(f"bench: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def find_tool(name: str, hint: str = "apt-get install -y nginx wrk hey") -> str:
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)),
                                      None)
    if path is None:
        fail(f"{name} not found; install it with: {hint}")
    return path


def pinned(core: int | None, cmd: list[str]) -> list[str]:
    """cmd run on one core with taskset (taskset execs, so the pid stays the tool's own)."""
    if core is None or shutil.which("taskset") is None:
        return cmd
    return ["taskset", "-c", str(core), *cmd]


def cores() -> tuple[int | None, int | None]:
    """(generator core, target core): the first and last core, or no pinning on a single core."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if count < 2:
        return None, None
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[0], allowed[-1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            fail(f"{proc.args[0]} exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                resp.read()
            return
        except OSError:
            time.sleep(0.1)
    fail(f"{url} did not answer within {timeout:.0f} s")


def stop(proc: subprocess.Popen | None, timeout: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def start_service(workdir: Path, *flags: str, core: int | None = None) -> tuple[subprocess.Popen, str]:
    """The reference product-service on a free port with a fresh database; returns (process, base URL)."""
    port = free_port()
    cmd = pinned(core, [sys.executable, "-m", "product_service", "--host", "127.0.0.1", "--port", str(port),
                        "--db", str(workdir / f"service-{port}.db"), "--reset", *flags])
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", proc, timeout=30)
    return proc, url


def start_target(workdir: Path, target: str, config, core: int | None
                 ) -> tuple[subprocess.Popen, str, list[dict], list[str]]:
    """The bench target: canned nginx or the reference service -> (process, url, its products, body collisions)."""
    if target == "nginx":
        products, _ = pick_bench_products(config)
        proc, url, collisions = start_canned_nginx(workdir, products, config, core)
        return proc, url, products, collisions
    proc, url = start_service(workdir, core=core)
    return proc, url, get_json(url + "/products")["data"], []


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


# The bench catalogue and the canned nginx ------------------------------------------------------------

def bench_products(offset: int = 24) -> list[dict]:
    """20 products in the seed catalogue's categories; name i is offset + 8*i characters long."""
    products = []
    for category, count in CATEGORY_SIZES.items():
        for _ in range(count):
            i = len(products)
            stem = f"Bench {category} {i:02d} "
            name = stem + "x" * (offset + 8 * i - len(stem))
            products.append({"name": name, "description": f"A {category.lower()} product for the benchmark.",
                             "price": round(9.99 + 37.5 * i, 2), "stock": CANNED_STOCK, "category": category})
    return products


def pick_bench_products(config) -> tuple[list[dict], list[str]]:
    """The bench catalogue whose name lengths leave the fewest request bodies the canned nginx cannot tell apart."""
    best = None
    for offset in range(22, 64):
        products = bench_products(offset)
        collisions = canned_routes(products, config).collisions
        if best is None or len(collisions) < len(best[1]):
            best = (products, collisions)
    return best


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _success(data: Any) -> str:
    return _dumps({"status": "success", "data": data})


def _error(code: str, message: str) -> str:
    return _dumps({"status": "error", "error": {"code": code, "message": message}})


def _body_length(kwargs: dict[str, Any]) -> int:
    """Content-Length of a request as both Locust clients send it (json.dumps defaults, or raw data)."""
    if "data" in kwargs:
        return len(kwargs["data"])
    return len(json.dumps(kwargs["json"]).encode())


@dataclass
class CannedRoutes:
    """Per POST/PATCH path: Content-Length -> (status, body); plus the lengths that could not be told apart."""

    routes: dict[str, dict[int, tuple[int, str]]] = field(default_factory=dict)
    collisions: list[str] = field(default_factory=list)

    def add(self, path: str, length: int, status: int, body: str, label: str, priority: bool) -> None:
        table = self.routes.setdefault(path, {})
        existing = table.get(length)
        if existing is None or (priority and existing[0] != status):
            if existing is not None and existing[0] != status:
                self.collisions.append(f"{path} length {length}: {label} overrides status {existing[0]}")
            table[length] = (status, body)
        elif existing[0] != status:
            self.collisions.append(f"{path} length {length}: {label} (expects {status}) answered {existing[0]}")


def canned_routes(products: list[dict], config) -> CannedRoutes:
    """Every body the suite can send to POST/PATCH endpoints, mapped to the answer the contract promises."""
    from test_data import EDGE_CASES, INVALID_BUY_PAYLOADS, INVALID_STOCK_PAYLOADS

    data = config.test_data
    routes = CannedRoutes()
    validation = _error("VALIDATION_ERROR", "Validation failed")
    # Happy paths first: they win any collision.
    for product in products:
        name = product["name"]
        routes.add("/products/details", _body_length({"json": {"name": name}}), 200, _success(product),
                   "details", True)
        for quantity in range(1, data.max_buy_quantity + 1):
            routes.add("/products/buy", _body_length({"json": {"name": name, "quantity": quantity}}), 200,
                       _success({"productName": name, "quantity": quantity, "remainingStock": CANNED_STOCK}),
                       "buy", True)
        for stock in {data.stock_update_min, data.stock_update_max}:
            routes.add("/products/stock", _body_length({"json": {"name": name, "stock": stock}}), 200,
                       _success({"message": "Stock updated successfully"}), "stock", True)
        routes.add("/products/buy", _body_length({"json": {"name": name, "quantity": 1_000_000}}), 400,
                   _error("INSUFFICIENT_STOCK", f"Insufficient stock for product '{name}'. "
                          f"Available: {CANNED_STOCK}, Requested: 1000000"), "beyond_stock", True)
    unknown = data.non_existent_product_name
    not_found = _error("RESOURCE_NOT_FOUND", f"Product with name '{unknown}' not found")
    routes.add("/products/details", _body_length({"json": {"name": unknown}}), 404, not_found, "details_unknown", False)
    routes.add("/products/buy", _body_length({"json": {"name": unknown, "quantity": 1}}), 404, not_found,
               "buy_unknown", False)
    for payload in INVALID_BUY_PAYLOADS + INVALID_STOCK_PAYLOADS:
        path = "/products/buy" if payload in INVALID_BUY_PAYLOADS else "/products/stock"
        for product in products if payload.needs_product else products[:1]:
            routes.add(path, _body_length(payload.request_kwargs(product["name"])), payload.expect_status, validation,
                       f"invalid {payload.label}", False)
    for case in EDGE_CASES:
        if case.method == "GET":
            continue
        for product in products if case.needs_product else products[:1]:
            status = case.expect_status
            body = validation if status == 400 else not_found if status == 404 else _success(product)
            routes.add(case.path, _body_length(case.request_kwargs(product["name"])), status, body,
                       f"edge {case.label}", False)
    return routes


def _quote(text: str) -> str:
    """A JSON text as an nginx single-quoted string (apostrophes become the JSON escape \\u0027)."""
    text = text.replace("'", "\\u0027")
    if "\\" in text.replace("\\u0027", "") or "$" in text:
        raise ValueError(f"cannot put {text[:40]!r} in an nginx string")
    return f"'{text}'"


def canned_nginx_conf(prefix: Path, port: int, products: list[dict], config) -> tuple[str, list[str]]:
    """nginx.conf text serving the whole contract from strings, and the list of Content-Length collisions."""
    routes = canned_routes(products, config)
    maps = []
    locations = []
    defaults = {"/products/details": (404, _error("RESOURCE_NOT_FOUND", "Product not found")),
                "/products/buy": (400, _error("VALIDATION_ERROR", "Validation failed")),
                "/products/stock": (400, _error("VALIDATION_ERROR", "Validation failed"))}
    for index, (path, default) in enumerate(defaults.items()):
        table = routes.routes.get(path, {})
        body_lines = [f"    default {_quote(default[1])};"]
        status_lines = [f"    default {default[0]};"]
        for length, (status, body) in sorted(table.items()):
            body_lines.append(f"    {length} {_quote(body)};")
            status_lines.append(f"    {length} {status};")
        maps.append(f"map $content_length $body{index} {{\n" + "\n".join(body_lines) + "\n}")
        maps.append(f"map $content_length $status{index} {{\n" + "\n".join(status_lines) + "\n}")
        branches = "".join(f"        if ($status{index} = {status}) {{ return {status} $body{index}; }}\n"
                           for status in sorted({s for s, _ in table.values()} | {default[0]}))
        locations.append(f"    location = {path} {{\n{branches}        return 500 $body{index};\n    }}")
    # Lists are files: an nginx string holds at most 4 KB.
    category_lines = ["    default empty;"]
    category_lines += [f'    "~^{category}$" {category};' for category in sorted({p["category"] for p in products})]
    maps.append("map $arg_category $category_file {\n" + "\n".join(category_lines) + "\n}")
    not_found = _error("RESOURCE_NOT_FOUND", "Cannot GET this path")
    missing = _error("VALIDATION_ERROR", "Missing 'category' query parameter")
    user = "user root;" if os.geteuid() == 0 else ""
    conf = f"""# generated by bench/common.py: the product-service contract as canned strings
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log error;
{user}
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path {prefix}/tmp; proxy_temp_path {prefix}/tmp; fastcgi_temp_path {prefix}/tmp;
  uwsgi_temp_path {prefix}/tmp; scgi_temp_path {prefix}/tmp;
  default_type application/json;
  map_hash_bucket_size 128;
{chr(10).join(maps)}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    add_header Access-Control-Allow-Origin * always;
    location = /health {{ return 200 '{{"status":"ok"}}'; }}
    root {prefix}/www;
    location = /products {{ try_files /products.json =500; }}
    location = /products/category {{
        if ($arg_category = "") {{ return 400 {_quote(missing)}; }}
        try_files /category-$category_file.json =500;
    }}
{chr(10).join(locations)}
    location / {{ return 404 {_quote(not_found)}; }}
  }}
}}
"""
    return conf, routes.collisions


def write_canned_files(www: Path, products: list[dict]) -> None:
    """The list answers: products.json and category-<C>.json (category-empty.json for any other category)."""
    www.mkdir(parents=True, exist_ok=True)
    www.chmod(0o755)
    (www / "products.json").write_text(_success(products))
    (www / "category-empty.json").write_text(_success([]))
    for category in {p["category"] for p in products}:
        (www / f"category-{category}.json").write_text(_success([p for p in products if p["category"] == category]))
    for file in www.iterdir():
        file.chmod(0o644)


def start_canned_nginx(workdir: Path, products: list[dict], config, core: int | None) -> tuple[subprocess.Popen, str, list[str]]:
    """nginx (one worker, pinned to `core`) serving the canned contract; returns (process, URL, collisions)."""
    nginx = find_tool("nginx")
    prefix = workdir / "nginx"
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    for path in (workdir, prefix, prefix / "tmp"):
        path.chmod(0o755)
    port = free_port()
    conf, collisions = canned_nginx_conf(prefix, port, products, config)
    write_canned_files(prefix / "www", products)
    (prefix / "nginx.conf").write_text(conf)
    proc = subprocess.Popen(pinned(core, [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                                          "-e", str(prefix / "error.log")]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", proc)
    return proc, url, collisions


# The request mix of the bare scripts and wrk ----------------------------------------------------------

def _task_requests(task: str, products: list[dict], config) -> list[dict]:
    """The requests one run of a suite task sends, each equally likely (name, method, path, json|data)."""
    from urllib.parse import quote

    from test_data import EDGE_CASES, INVALID_BUY_PAYLOADS, INVALID_STOCK_PAYLOADS

    data = config.test_data
    names = [p["name"] for p in products]
    unknown = data.non_existent_product_name
    stock = data.stock_update_max
    if task == "browse_all_products":
        return [{"name": "Get_All_Products", "method": "GET", "path": "/products"}]
    if task == "get_products_by_category":
        return [{"name": f"Get_Products_By_Category_{c}", "method": "GET",
                 "path": f"/products/category?category={quote(c, safe='')}"} for c in data.categories]
    if task == "get_product_details":
        return [{"name": "Get_Product_Details", "method": "POST", "path": "/products/details", "json": {"name": n}}
                for n in names]
    if task == "buy_product":
        return [{"name": "Buy_Product", "method": "POST", "path": "/products/buy", "json": {"name": n, "quantity": 1}}
                for n in names]
    if task == "update_stock":
        return [{"name": "Update_Product_Stock", "method": "PATCH", "path": "/products/stock",
                 "json": {"name": n, "stock": stock}} for n in names]
    if task == "hit_invalid_path":
        return [{"name": "Invalid_Path", "method": "GET", "path": "/products/this-path-does-not-exist"}]
    if task == "health_check":
        return [{"name": "Health_Check", "method": "GET", "path": "/health"}]
    if task == "missing_category":
        return [{"name": "Missing_Category", "method": "GET", "path": "/products/category"}]
    if task == "details_unknown_product":
        return [{"name": "Details_Unknown_Product", "method": "POST", "path": "/products/details",
                 "json": {"name": unknown}}]
    if task == "buy_unknown_product":
        return [{"name": "Buy_Unknown_Product", "method": "POST", "path": "/products/buy",
                 "json": {"name": unknown, "quantity": 1}}]
    if task == "buy_beyond_stock":
        return [{"name": "Buy_Beyond_Stock", "method": "POST", "path": "/products/buy",
                 "json": {"name": n, "quantity": 1_000_000}} for n in names]
    if task in ("invalid_buy_payload", "invalid_stock_payload"):
        payloads, path, method, prefix = ((INVALID_BUY_PAYLOADS, "/products/buy", "POST", "Invalid_Buy_Payload_")
                                          if task == "invalid_buy_payload" else
                                          (INVALID_STOCK_PAYLOADS, "/products/stock", "PATCH", "Invalid_Stock_Payload_"))
        out = []
        for payload in payloads:
            kwargs = payload.request_kwargs(names[0])
            entry = {"name": prefix + payload.label, "method": method, "path": path}
            if "data" in kwargs:
                entry["data"] = kwargs["data"].decode()
            else:
                entry["json"] = kwargs["json"]
            out.append(entry)
        return out
    if task == "edge_case":
        out = []
        for case in EDGE_CASES:
            kwargs = case.request_kwargs(names[0])
            path = case.path
            if "params" in kwargs:
                path += "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in kwargs["params"].items())
            entry = {"name": f"Edge_Case_{case.label}", "method": case.method, "path": path}
            if "data" in kwargs:
                entry["data"] = kwargs["data"].decode()
            elif "json" in kwargs:
                entry["json"] = kwargs["json"]
            out.append(entry)
        return out
    raise ValueError(f"unknown task {task}")


def request_mix(products: list[dict], config) -> list[dict]:
    """The suite's request mix as weighted requests: user-class share x task weight x uniform data choice.

    With no think time every user runs tasks at about the same rate, so a user class's share of the
    task runs is its share of the users.
    """
    shop = catalogue.read()
    weights = catalogue.configured_task_weights(config)
    classes = {name: config.user_types.get(name, shop.user_types[name].weight) for name in shop.weighted_user_types}
    total_users = sum(classes.values())
    mix: dict[tuple, dict] = {}
    for user in classes:
        if not classes[user]:
            continue
        active = shop.task_weights(user, weights)
        task_total = sum(active.values())
        for task, weight in active.items():
            requests = _task_requests(task, products, config)
            for request in requests:
                share = classes[user] / total_users * weight / task_total / len(requests)
                key = (request["name"], request["method"], request["path"],
                       json.dumps(request.get("json")), request.get("data"))
                entry = mix.setdefault(key, {**request, "weight": 0.0})
                entry["weight"] += share
    return list(mix.values())


def expand_mix(mix: list[dict], slots: int = 2000) -> list[dict]:
    """The mix as a list where each request appears in proportion to its weight (for random.choice)."""
    total = sum(entry["weight"] for entry in mix)
    out = []
    for entry in mix:
        out += [entry] * max(1, round(entry["weight"] / total * slots))
    return out


def wrk_script(mix: list[dict], slots: int = 2000) -> str:
    """A wrk Lua script sending the mix (requests chosen at random in proportion to their weight)."""
    # Requests are formatted in init(): wrk.format adds the Host header, which is known only then.
    lines = ["local requests = {}", "init = function(args)"]
    for entry in expand_mix(mix, slots):
        body = entry.get("data")
        if "json" in entry:
            body = json.dumps(entry["json"])
        headers = '{["Content-Type"] = "application/json"}' if body is not None else "{}"
        body_lua = "nil" if body is None else "[==[" + body + "]==]"
        lines.append(f'  requests[#requests + 1] = wrk.format("{entry["method"]}", [==[{entry["path"]}]==], '
                     f"{headers}, {body_lua})")
    lines += ["end", "math.randomseed(os.time())", "request = function()",
              "  return requests[math.random(#requests)]", "end"]
    return "\n".join(lines) + "\n"
