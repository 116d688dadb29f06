"""pytest fixtures: ``from tests.support.kube.fixtures import *`` in a conftest.

``kube_api`` is session-scoped and shared even when several conftests import
these fixtures (one control plane per test session, not one per conftest).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import pytest

from .controlplane import KubeAPI, start_kube_api
from .emulator import Emulator

__all__ = ["kube_api", "kube_emulator", "kube_namespace"]


class _Shared:
    """One control plane for the whole session, reference-counted across fixture registrations."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._stack: contextlib.ExitStack | None = None
        self._api: KubeAPI | None = None

    def acquire(self) -> KubeAPI:
        with self._lock:
            if self._api is None:
                stack = contextlib.ExitStack()
                self._api = stack.enter_context(start_kube_api())
                self._stack = stack
            self._users += 1
            return self._api

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._stack is not None:
                self._stack.close()
                self._stack, self._api = None, None


_SHARED = _Shared()


@pytest.fixture(scope="session")
def kube_api() -> Iterator[KubeAPI]:
    """The session's Kubernetes API: emulator, or a real control plane with KUBEBUILDER_ASSETS."""
    api = _SHARED.acquire()
    try:
        yield api
    finally:
        _SHARED.release()


@pytest.fixture
def kube_namespace(kube_api: KubeAPI) -> Iterator[str]:
    """A fresh namespace for one test, deleted (not awaited) afterwards."""
    name = kube_api.create_namespace()
    try:
        yield name
    finally:
        kube_api.delete_namespace(name)


@pytest.fixture
def kube_emulator(kube_api: KubeAPI) -> Iterator[Emulator]:
    """The emulator behind ``kube_api``; skips on a real control plane. Resets test controls after use."""
    if kube_api.emulator is None:
        pytest.skip("needs the emulator's test controls (not available on a real control plane)")
    emulator = kube_api.emulator
    emulator.reset_counts()
    try:
        yield emulator
    finally:
        emulator.clear_faults()
        emulator.reset_kubelets()
