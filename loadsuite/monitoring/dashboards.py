"""The two Grafana dashboards (Prometheus-compatible/MetricsQL and InfluxDB 2/Flux), built from one panel list.

The panels, their queries and the SLO lines (thresholds.p95_ms / p99_ms of config.yaml) live here once;
`python -m loadsuite.monitoring.dashboards` rewrites grafana/dashboards/*.json, and a test keeps the
committed files equal to what this module builds. Queries assume the default measurement prefix "locust".
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "grafana" / "dashboards"
PROMETHEUS_FILE = "locust-victoriametrics.json"
FLUX_FILE = "locust-influxdb2-flux.json"

RUN = 'run_id=~"$run_id"'
# Per-interval deltas (count, failures, histogram buckets) are summed over a window, never rate()d. Every
# panel's minimum interval is MIN_INTERVAL, so a window holds several of the suite's 5-s points.
WINDOW = "$__interval"
MIN_INTERVAL = "15s"


@dataclass(frozen=True)
class Target:
    legend: str
    promql: str
    flux: str
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    kind: str  # Grafana panel type: timeseries, stat or bargauge
    unit: str
    targets: tuple[Target, ...]
    slo_lines: bool = False
    description: str = ""


def _flux_from(measurement: str, field: str, extra: str = "") -> str:
    return (f'from(bucket: "${{bucket}}")\n  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n'
            f'  |> filter(fn: (r) => r._measurement == "{measurement}" and r._field == "{field}")\n'
            f'  |> filter(fn: (r) => r.run_id =~ /^${{run_id:regex}}$/){extra}')


def _flux_quantile(q: float, by_name: bool = False, whole_range: bool = False) -> str:
    group = '["le", "name"]' if by_name else '["le"]'
    window = "|> sum()\n  |> duplicate(column: \"_stop\", as: \"_time\")" if whole_range else \
        "|> aggregateWindow(every: v.windowPeriod, fn: sum, createEmpty: false)"
    after = '["_time", "name"]' if by_name else '["_time"]'
    return _flux_from("locust_latency", "bucket", (
        f"\n  |> group(columns: {group})\n  {window}"
        '\n  |> map(fn: (r) => ({r with _value: float(v: r._value),'
        ' le: if r.le == "+Inf" then float(v: "+Inf") else float(v: r.le)}))'
        f"\n  |> group(columns: {after})"
        f'\n  |> histogramQuantile(quantile: {q}, countColumn: "_value", upperBoundColumn: "le", valueColumn: "_value")'
        + ('\n  |> group(columns: ["name"])' if by_name else f'\n  |> group()\n  |> set(key: "_field", value: "p{int(q * 100)}")')))


def _flux_sum_window(measurement: str, field: str, by: Optional[str] = None, per_second: bool = True,
                     legend: str = "") -> str:
    group = f'["{by}"]' if by else "[]"
    per_s = ('\n  |> map(fn: (r) => ({r with _value: float(v: r._value) / float(v: int(v: v.windowPeriod)) * 1000000000.0}))'
             if per_second else "")
    tail = f'\n  |> set(key: "_field", value: "{legend}")' if legend and not by else ""
    return _flux_from(measurement, field, f"\n  |> group(columns: {group})"
                      "\n  |> aggregateWindow(every: v.windowPeriod, fn: sum, createEmpty: false)" + per_s + tail)


def _quantile(q: float, by: str = "le", window: str = WINDOW) -> str:
    return f"histogram_quantile({q}, sum by ({by}) (sum_over_time(locust_latency_bucket{{{RUN}}}[{window}])))"


def _per_second(metric: str, by: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (sum_over_time({metric}{{{RUN}}}[{WINDOW}])) / ($__interval_ms / 1000)"


PANELS: tuple[Panel, ...] = (
    Panel("Active users", "timeseries", "short", (
        Target("all users", f"sum(locust_run_users{{{RUN}}})",
               _flux_from("locust_run", "users", '\n  |> aggregateWindow(every: v.windowPeriod, fn: last, createEmpty: false)'
                          '\n  |> group(columns: ["_time"])\n  |> sum()\n  |> group()\n  |> set(key: "_field", value: "all users")')),
        Target("{{user_class}}", f"sum by (user_class) (locust_users_users{{{RUN}}})",
               _flux_from("locust_users", "users", '\n  |> group(columns: ["user_class"])\n  |> aggregateWindow(every: v.windowPeriod, fn: last, createEmpty: false)')),
    )),
    Panel("Requests/s and failures/s", "timeseries", "reqps", (
        Target("requests/s", _per_second("locust_requests_count"),
               _flux_sum_window("locust_requests", "count", legend="requests/s")),
        Target("failures/s", _per_second("locust_requests_failures"),
               _flux_sum_window("locust_requests", "failures", legend="failures/s")),
    )),
    Panel("Latency p50 / p95 / p99 (from the histogram; SLO lines from config.yaml)", "timeseries", "ms", (
        Target("p50", _quantile(0.5), _flux_quantile(0.5)),
        Target("p95", _quantile(0.95), _flux_quantile(0.95)),
        Target("p99", _quantile(0.99), _flux_quantile(0.99)),
    ), slo_lines=True),
    Panel("p95 over the selected range (all request names, all generators)", "stat", "ms", (
        Target("p95", _quantile(0.95, window="$__range"), _flux_quantile(0.95, whole_range=True), instant=True),
    ), slo_lines=True),
    Panel("p95 by request name", "timeseries", "ms", (
        Target("{{name}}", _quantile(0.95, by="name, le"), _flux_quantile(0.95, by_name=True)),
    ), slo_lines=True),
    Panel("Failures/s by reason", "timeseries", "reqps", (
        Target("{{name}}: {{reason}}", _per_second("locust_failures_count", "name, reason"),
               _flux_sum_window("locust_failures", "count", by="reason")),
    )),
    Panel("Failures by reason over the selected range", "bargauge", "short", (
        Target("{{name}}: {{reason}}",
               f"sum by (name, reason) (sum_over_time(locust_failures_count{{{RUN}}}[$__range]))",
               _flux_from("locust_failures", "count", '\n  |> group(columns: ["name", "reason"])\n  |> sum()'),
               instant=True),
    )),
    Panel("Business: purchases, units sold, rejected buys (insufficient stock)", "timeseries", "short", (
        Target("purchases", f"sum(locust_custom_purchases{{{RUN}}})",
               _flux_from("locust_custom", "purchases", '\n  |> group(columns: ["_field"])\n  |> aggregateWindow(every: v.windowPeriod, fn: last, createEmpty: false)')),
        Target("units sold", f"sum(locust_custom_units_sold{{{RUN}}})",
               _flux_from("locust_custom", "units_sold", '\n  |> group(columns: ["_field"])\n  |> aggregateWindow(every: v.windowPeriod, fn: last, createEmpty: false)')),
        Target("rejected buys", f"sum(locust_custom_insufficient_stock{{{RUN}}})",
               _flux_from("locust_custom", "insufficient_stock", '\n  |> group(columns: ["_field"])\n  |> aggregateWindow(every: v.windowPeriod, fn: last, createEmpty: false)')),
    )),
)

ANNOTATION_PROMQL = f"locust_events_value{{{RUN}}}"
ANNOTATION_FLUX = _flux_from("locust_events", "value", '\n  |> map(fn: (r) => ({r with text: r.message, title: r.event}))'
                              '\n  |> keep(columns: ["_time", "_value", "text", "title", "event", "run_id"])')
RUN_ID_PROMQL = "label_values(locust_run_users, run_id)"
RUN_ID_FLUX = ('import "influxdata/influxdb/schema"\nschema.tagValues(bucket: "${bucket}", tag: "run_id", '
               'predicate: (r) => r._measurement == "locust_run", start: -30d)')


def _thresholds(p95_ms: Optional[float], p99_ms: Optional[float]) -> dict:
    steps = [{"color": "green", "value": None}]
    if p95_ms:
        steps.append({"color": "orange", "value": p95_ms})
    if p99_ms:
        steps.append({"color": "red", "value": p99_ms})
    return {"mode": "absolute", "steps": steps}


def _panel_json(index: int, panel: Panel, datasource: dict, flavour: str, slo: tuple) -> dict:
    targets = []
    for n, target in enumerate(panel.targets):
        ref = chr(ord("A") + n)
        if flavour == "prometheus":
            targets.append({"refId": ref, "datasource": datasource, "expr": target.promql,
                            "legendFormat": target.legend, "range": not target.instant,
                            "instant": target.instant})
        else:
            targets.append({"refId": ref, "datasource": datasource, "query": target.flux})
    defaults: dict = {"unit": panel.unit}
    if panel.slo_lines:
        defaults["thresholds"] = _thresholds(*slo)
        if panel.kind == "timeseries":
            defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
    width = 12 if panel.kind != "stat" else 6
    return {"id": index + 1, "type": panel.kind, "title": panel.title, "datasource": datasource,
            "interval": MIN_INTERVAL,
            "gridPos": {"h": 8, "w": width, "x": (index % 2) * 12, "y": (index // 2) * 8},
            "fieldConfig": {"defaults": defaults, "overrides": []}, "targets": targets}


def build(flavour: str, p95_ms: Optional[float], p99_ms: Optional[float]) -> dict:
    """One dashboard as Grafana's JSON model; flavour is "prometheus" (MetricsQL) or "flux" (InfluxDB 2)."""
    ds_type = "prometheus" if flavour == "prometheus" else "influxdb"
    datasource = {"type": ds_type, "uid": "${datasource}"}
    variables = [{"name": "datasource", "type": "datasource", "query": ds_type, "label": "Data source",
                  "current": {}, "hide": 0}]
    if flavour == "flux":
        variables.append({"name": "bucket", "type": "constant", "query": "locust", "hide": 2,
                          "label": "Bucket (edit to match monitoring.influxdb.bucket)"})
        run_query: object = RUN_ID_FLUX
        annotation = {"name": "Run start / end", "datasource": datasource, "enable": True,
                      "iconColor": "purple", "target": {"refId": "Anno", "query": ANNOTATION_FLUX}}
    else:
        run_query = {"query": RUN_ID_PROMQL, "refId": "RunIds"}
        annotation = {"name": "Run start / end", "datasource": datasource, "enable": True,
                      "iconColor": "purple", "expr": ANNOTATION_PROMQL, "step": "1s",
                      "titleFormat": "{{event}}", "textFormat": "{{message}}", "tagKeys": "run_id,event",
                      "useValueForTime": False}
    variables.append({"name": "run_id", "type": "query", "label": "Run", "datasource": datasource,
                      "query": run_query, "refresh": 2, "includeAll": True, "multi": True,
                      "allValue": ".*", "sort": 2, "current": {}, "hide": 0})
    title = "Locust load test (VictoriaMetrics / Prometheus)" if flavour == "prometheus" else \
        "Locust load test (InfluxDB 2, Flux)"
    return {
        "uid": f"locust-{flavour}", "title": title, "tags": ["locust", "load-test"], "editable": True,
        "schemaVersion": 39, "version": 1, "refresh": "5s", "time": {"from": "now-30m", "to": "now"},
        "timezone": "utc", "graphTooltip": 1,
        "annotations": {"list": [annotation]},
        "templating": {"list": variables},
        "panels": [_panel_json(i, p, datasource, flavour, (p95_ms, p99_ms)) for i, p in enumerate(PANELS)],
    }


def render(p95_ms: Optional[float], p99_ms: Optional[float]) -> dict[str, str]:
    """File name -> JSON text of both dashboards."""
    return {name: json.dumps(build(flavour, p95_ms, p99_ms), indent=2) + "\n"
            for name, flavour in ((PROMETHEUS_FILE, "prometheus"), (FLUX_FILE, "flux"))}


def main() -> int:
    from ..config import load_config

    thresholds = load_config().thresholds
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render(thresholds.p95_ms, thresholds.p99_ms).items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
