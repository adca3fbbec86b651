"""Live run metrics to InfluxDB (v2 write API; VictoriaMetrics too), batched, bounded, off the users' path.

Turn it on in config.yaml (`monitoring.influxdb.enabled: true`, url, org, bucket) with the token in the
INFLUXDB_TOKEN environment variable; event_hooks.register() installs it at init. The machinery (buffer,
sampler, writer, the series written, the latency histogram) is in loadsuite/monitoring/influx.py; the
Grafana dashboards in grafana/ are built by loadsuite/monitoring/dashboards.py; docs/monitoring.md lists
the series and how to point the suite at a store and import the dashboards.
"""
from __future__ import annotations

from loadsuite.monitoring.influx import Monitor, install

__all__ = ["Monitor", "install"]
