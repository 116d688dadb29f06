"""Request counting and fault injection, shared between the server thread and test threads."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

from .errors import REASONS, ApiError


@dataclass
class Fault:
    """Fail (``status``) or delay (``delay`` seconds) matching requests, ``times`` times (None: always)."""

    verb: str
    resource: str
    status: int | None
    times: int | None
    message: str
    reason: str | None = None
    retry_after: int | None = None
    delay: float = 0.0
    namespace: str | None = None
    name: str | None = None

    def matches(self, verb: str, resource: str, namespace: str | None, name: str | None) -> bool:
        return (
            self.verb in ("*", verb)
            and self.resource in ("*", resource)
            and self.namespace in (None, namespace)
            and self.name in (None, name)
        )

    def error(self) -> ApiError:
        assert self.status is not None
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        details = {"retryAfterSeconds": self.retry_after} if self.retry_after is not None else None
        return ApiError(self.status, self.message, self.reason or REASONS.get(self.status, ""), details, headers)


class Accounting:
    """Counts requests by (verb, resource) and hands out injected faults, under one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()
        self._faults: list[Fault] = []

    def record(self, verb: str, resource: str) -> None:
        with self._lock:
            self._counts[(verb, resource)] += 1

    def counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def take_faults(self, verb: str, resource: str, namespace: str | None, name: str | None) -> list[Fault]:
        """Matching faults, each consuming one of its ``times``; delays first, then at most one error."""
        taken: list[Fault] = []
        with self._lock:
            for fault in list(self._faults):
                if not fault.matches(verb, resource, namespace, name):
                    continue
                if fault.status is not None and any(f.status is not None for f in taken):
                    continue
                taken.append(fault)
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
        return sorted(taken, key=lambda f: f.status is not None)
