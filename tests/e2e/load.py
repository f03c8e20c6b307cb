"""Steady background traffic to a set of adapters, counting every failed request."""

from __future__ import annotations

import collections
import itertools
import threading
import time

import requests


class BackgroundLoad:
    """`with BackgroundLoad(url, key, models):` keeps `workers` requests in flight until the block ends.

    Loopback only, and bounded: it stops by itself after `max_seconds`.
    """

    def __init__(self, endpoint: str, api_key: str, models: list[str], workers: int = 4, max_seconds: float = 1800):
        self.endpoint, self.api_key, self.models = endpoint, api_key, models
        self.workers, self.max_seconds = workers, max_seconds
        self.ok = 0
        self.failures: collections.Counter = collections.Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.started = self.stopped = 0.0

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def _run(self, offset: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.api_key}"
        models = itertools.islice(itertools.cycle(self.models), offset, None)
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            model = next(models)
            try:
                response = session.post(f"{self.endpoint}/chat/completions", timeout=120, json={
                    "model": model, "max_tokens": 4, "temperature": 0,
                    "messages": [{"role": "user", "content": "ping"}],
                })
                error = None if response.status_code == 200 else f"{model}: HTTP {response.status_code}"
            except requests.RequestException as exc:
                error = f"{model}: {type(exc).__name__}"
            with self._lock:
                if error:
                    self.failures[error] += 1
                else:
                    self.ok += 1

    def __enter__(self) -> "BackgroundLoad":
        self.started = time.monotonic()
        for i in range(self.workers):
            thread = threading.Thread(target=self._run, args=(i,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=180)
        self.stopped = time.monotonic()

    def summary(self) -> str:
        seconds = (self.stopped or time.monotonic()) - self.started
        return f"{self.ok} ok, {self.failed} failed in {seconds:.0f} s {dict(self.failures) or ''}".strip()
