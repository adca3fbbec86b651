"""Bare Locust FastHttpUser: the bench's request mix, no validation, no cache, no hooks (the baseline).

bench/run.py writes the mix (a JSON list, each request repeated in proportion to its weight) and
points BENCH_MIX at it; BENCH_WAIT_S is the wait between requests (default 0), or BENCH_USER_RPS
paces each user at that many requests per second (the memory soak's baseline).
"""
import json
import os
import random

from locust import FastHttpUser, constant, constant_throughput, task

with open(os.environ["BENCH_MIX"], encoding="utf-8") as mix:
    REQUESTS = [(r["name"], r["method"], r["path"], r.get("json"), r.get("data")) for r in json.load(mix)]
RAW_HEADERS = {"Content-Type": "application/json"}


class BareFastUser(FastHttpUser):
    wait_time = (constant_throughput(float(os.environ["BENCH_USER_RPS"])) if os.environ.get("BENCH_USER_RPS")
                 else constant(float(os.environ.get("BENCH_WAIT_S", "0"))))

    @task
    def send(self):
        name, method, path, body, data = random.choice(REQUESTS)
        if data is None:
            self.client.request(method, path, name=name, json=body)
        else:
            self.client.request(method, path, name=name, data=data, headers=RAW_HEADERS)
