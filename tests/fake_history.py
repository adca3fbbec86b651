"""Synthetic run histories: run folders with a summary.json shaped like the suite's, one per week.

Each run's numbers are a base level times seeded log-normal noise (a step or a drift added where asked), so a
test says exactly what changed and when, and the same seed always gives the same history.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from loadsuite import SUITE_VERSION, catalogue

START = datetime(2026, 1, 5, 5, 0, tzinfo=timezone.utc)  # a Monday, 05:00 UTC like the weekly job
USER_CLASSES = sorted(catalogue.read().user_types)  # what a default run's summary.json lists
REQUESTS = (("GET", "Get_All_Products", 4000, 40.0), ("POST", "Buy_Product", 3000, 60.0),
            ("POST", "Get_Product_Details", 2500, 30.0))  # method, name, requests per run, p95 ms


def run_id(index: int) -> str:
    return (START + timedelta(weeks=index)).strftime("%Y%m%dT%H%M%SZ")


def summary(index: int, factors: dict[str, float] | None = None, *, users: int = 20, duration_s: float = 300.0,
            bundled: bool = True, host: str = "http://127.0.0.1:41234", shape=None, suite_version=SUITE_VERSION,
            violations: int = 0, error_rate: float = 0.0, exit_code: int | None = None) -> dict:
    """A summary.json of run `index`; factors multiply the latency ("latency"), the throughput ("rps")."""
    factors = factors or {}
    latency, rate = factors.get("latency", 1.0), factors.get("rps", 1.0)
    started = START + timedelta(weeks=index)
    endpoints = []
    for method, name, requests, p95 in REQUESTS:
        endpoints.append({"name": name, "method": method, "requests": requests, "failures": int(requests * error_rate),
                          "error_rate": error_rate, "rps": round(requests / duration_s * rate, 2),
                          "p50_ms": round(p95 * 0.4 * latency, 2), "p95_ms": round(p95 * latency, 2),
                          "p99_ms": round(p95 * 1.6 * latency, 2)})
    total_requests = sum(r for _, _, r, _ in REQUESTS)
    totals = {"requests": total_requests, "failures": int(total_requests * error_rate), "error_rate": error_rate,
              "rps": round(total_requests / duration_s * rate, 2), "p50_ms": round(20 * latency, 2),
              "p95_ms": round(50 * latency, 2), "p99_ms": round(80 * latency, 2)}
    failed = violations > 0
    return {
        "run_id": run_id(index), "host": host, "bundled_service": bundled, "suite_version": suite_version,
        "started_at": started.isoformat(), "ended_at": (started + timedelta(seconds=duration_s)).isoformat(),
        "duration_s": duration_s, "interrupted": False, "client": "fast", "shape": shape,
        "users": {"peak": users, "final": 0}, "user_classes": USER_CLASSES,
        "totals": totals, "endpoints": endpoints,
        "consistency": {"enabled": True, "passed": not failed, "violations_total": violations},
        "verdict": {"passed": not failed, "exit_code": (1 if failed else 0) if exit_code is None else exit_code,
                    "reasons": []},
    }


def noisy_factors(runs: int, *, seed: int, noise: float = 0.05, step_at: int | None = None, step: float = 0.0,
                  metric: str = "latency") -> list[dict[str, float]]:
    """Per run: log-normal noise on latency and throughput; from run `step_at` (1-based) `metric` is x(1+step)."""
    rng = np.random.default_rng(seed)
    out = []
    for index in range(runs):
        factors = {"latency": float(np.exp(rng.normal(0, noise))), "rps": float(np.exp(rng.normal(0, noise / 2)))}
        if step_at is not None and index + 1 >= step_at:
            factors[metric] *= 1 + step
        out.append(factors)
    return out


def write_run(root: Path, data: dict, capacity: dict | None = None) -> Path:
    folder = root / data["run_id"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    if capacity is not None:
        (folder / "capacity.json").write_text(json.dumps(capacity), encoding="utf-8")
    return folder


def write_history(root: Path, factors: list[dict[str, float]], first: int = 0, **kwargs) -> list[Path]:
    """One run folder per entry of factors, a week apart, starting at week `first`."""
    return [write_run(root, summary(first + i, f, **kwargs)) for i, f in enumerate(factors)]
