"""The names the suite is built from that no class defines, once: shapes, clients, the contention user.

Tasks, user types and tags are defined in locustfile.py and read from it by loadsuite/catalogue.py.
"""
from __future__ import annotations

SHAPES = ("staged", "spike", "step")
CLIENTS = ("fast", "requests")
CONTENTION_USER = "ContentionUser"  # its test start sets the contended product's stock (runtime/run.py)
