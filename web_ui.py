"""Our tab in Locust's web UI: live custom stats and, after a test stops, the verdict (placeholder until issue 8 lands)."""


def install(environment) -> None:
    """Attach the tab to the web UI of this process (no-op without a web UI)."""
    return None
