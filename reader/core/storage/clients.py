"""One store's settings in this process, and its clients: one per process and settings."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

S = TypeVar("S")


class Clients(Generic[S]):
    """The settings `configure` last gave (`default` until then), and the client `make(settings)`
    builds for them, made once per process and settings: clients are thread-safe, and a forked
    child makes its own, since a client's connections must not be shared across processes.
    `environment`: variables the client reads when it is made (a change makes another client)."""

    def __init__(self, default: S, make: Callable[[S], object], environment: tuple[str, ...] = ()):
        self._settings, self._make, self._environment = default, make, environment
        self._clients: dict[tuple, object] = {}
        self._lock = threading.Lock()

    def configure(self, settings: S) -> S:
        """Makes `settings` this process's; returns the previous ones (to restore)."""
        previous, self._settings = self._settings, settings
        return previous

    def settings(self) -> S:
        return self._settings

    def client(self):
        settings = self._settings
        key = (os.getpid(), settings, *(os.environ.get(name) for name in self._environment))
        found = self._clients.get(key)
        if found is None:
            with self._lock:
                found = self._clients.get(key)
                if found is None:
                    found = self._clients[key] = self._make(settings)
        return found
