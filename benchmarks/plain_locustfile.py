"""Plain Locust, as a team would write it, for comparison with scalefinder's engine.

Each user asks for ``/`` at most ``PLAIN_LOCUST_USER_RPS`` times a second (constant_throughput),
so the number of users sets the offered rate.
"""

import os

from locust import FastHttpUser, constant_throughput, task

USER_RPS = float(os.environ.get("PLAIN_LOCUST_USER_RPS", "1"))


class PlainUser(FastHttpUser):
    wait_time = constant_throughput(USER_RPS)

    @task
    def fetch(self) -> None:
        self.client.get("/")
