"""The open model: an arrival-rate executor (executor.py) on a schedule and bound (schedule.py) at a target rate (rate.py)."""
from .executor import executor_for, install, reset, summary

__all__ = ["executor_for", "install", "reset", "summary"]
