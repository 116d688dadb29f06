"""Shared fixtures: a real driver process and fresh embedded volumes, with guaranteed cleanup."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.driver import DriverProcess, cleanup, running_driver, sqlite_volume

pytest_plugins = ["tests.support.backends"]


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short path: unix socket paths must stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="jfs-"))
    try:
        yield path
    finally:
        cleanup(path)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def driver(workdir: Path) -> Iterator[DriverProcess]:
    with running_driver(workdir / "driver") as running:
        yield running


@pytest.fixture
def sqlite_secret(workdir: Path) -> dict[str, str]:
    """A volume on SQLite metadata and local object storage, formatted by the driver on first use."""
    return sqlite_volume(workdir, "testvol")
