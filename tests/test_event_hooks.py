"""event_hooks helpers that need no Locust run."""
import locust  # noqa: F401  (gevent patches first)


def test_trimming_per_second_counters_keeps_the_current_rate_and_drops_old_seconds():
    """Soak runs stay flat: old per-second counters go, the last minute (what current_rps reads) stays."""
    import time

    from locust.stats import RequestStats

    from loadsuite.runtime import run as event_hooks

    stats = RequestStats()
    now = int(time.time())
    for second in range(now - 600, now + 1):
        entry = stats.get("Get_All_Products", "GET")
        entry.num_reqs_per_sec[second] += 3
        entry.num_fail_per_sec[second] += 1
        stats.total.num_reqs_per_sec[second] += 3
    dropped = event_hooks.trim_per_second_counters(stats, now - 60)
    entry = stats.get("Get_All_Products", "GET")
    assert min(entry.num_reqs_per_sec) == now - 60 and len(entry.num_reqs_per_sec) == 61
    assert min(stats.total.num_reqs_per_sec) == now - 60
    assert dropped == 3 * 540
