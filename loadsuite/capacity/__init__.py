"""The capacity finder: a search over open-model rates (search.py), run step by step in one Locust process
(driver.py), its answer written as capacity.json and steps.csv and shown in every output (report.py)."""
from __future__ import annotations


def search_config(config):
    """The run's config for a search: the open model at the start rate (every process needs its executor), no
    load shape (the search sets the rate) and no flash sale (a step's load is its offered rate, nothing else)."""
    shape = config.load_shape.model_copy(update={"name": None, "target_rps": config.capacity.start_rps})
    sale = config.flash_sale.model_copy(update={"enabled": False})
    return config.model_copy(update={"load_shape": shape, "flash_sale": sale})
