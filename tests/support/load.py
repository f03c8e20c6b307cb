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

    def __init__(self, endpoint: str, api_key: str, models: list[str], workers: int = 4, max_seconds: float = 1800,
                 retry_connection_errors: bool = False, pause: float = 0.1):
        self.endpoint, self.api_key, self.models = endpoint, api_key, models
        self.workers, self.max_seconds = workers, max_seconds
        # Seconds a worker waits after each answered request. The load proves that no request fails while
        # something changes; unpaced, two workers keep a core busy on this 2-core machine and slow the very
        # deploy, restart or image check under test (a fleet roll took 393 s under 14,512 requests). With
        # the pause, a request is still in flight or about to be at every moment of the change.
        self.pause = pause
        # As the openai client does by default: a request whose connection broke is sent again (once here).
        self.retry_connection_errors = retry_connection_errors
        self.retried = 0
        self.ok = 0
        self.failures: collections.Counter = collections.Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.started = self.stopped = 0.0
        self.first_failure = self.last_failure = None

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
            error = self._send(session, model)
            if error and error.endswith("ConnectionError") and self.retry_connection_errors:
                with self._lock:
                    self.retried += 1
                error = self._send(session, model)
            with self._lock:
                if error:
                    self.failures[error] += 1
                    now = time.monotonic()
                    self.first_failure = self.first_failure or now
                    self.last_failure = now
                else:
                    self.ok += 1
            if error:
                time.sleep(0.1)  # a refused connection returns at once: do not spin
            elif self.pause:
                self._stop.wait(self.pause)

    def _send(self, session: requests.Session, model: str) -> str | None:
        """One request; None if it succeeded, else what went wrong."""
        try:
            response = session.post(f"{self.endpoint}/chat/completions", timeout=120, json={
                "model": model, "max_tokens": 4, "temperature": 0,
                "messages": [{"role": "user", "content": "ping"}],
            })
            return None if response.status_code == 200 else f"{model}: HTTP {response.status_code}"
        except requests.RequestException as exc:
            return f"{model}: {type(exc).__name__}"

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

    @property
    def outage_seconds(self) -> float:
        """From the first failed request to the last: how long the other adapters were down."""
        return (self.last_failure - self.first_failure) if self.first_failure else 0.0

    def summary(self) -> str:
        seconds = (self.stopped or time.monotonic()) - self.started
        outage = f", failing for {self.outage_seconds:.1f} s" if self.failed else ""
        retried = f" ({self.retried} sent again after a broken connection)" if self.retried else ""
        return f"{self.ok} ok, {self.failed} failed in {seconds:.0f} s{retried}{outage} {dict(self.failures) or ''}".strip()
