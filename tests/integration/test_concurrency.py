"""Many kubelet calls at once, on real mounts: one client per volume, one bind per target, nothing leaked.

Kubelet publishes and unpublishes the pods of one volume in parallel; the driver
serialises per client and per target, so the end state must be exactly what the
calls asked for whatever order they ran in.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from juicefs_csi.mount.mountinfo import read_mounts
from tests.support.driver import DriverProcess, mounts_under
from tests.support.waiting import wait_until

pytestmark = pytest.mark.mounts

VOLUME = "pv-conc"
CONTEXT = {"subPath": "data"}


def run_all(calls: Iterable[Callable[[], object]], workers: int = 50) -> list[BaseException | None]:
    """Start every call at once; the error of each, None for success."""

    def run(call: Callable[[], object]) -> BaseException | None:
        try:
            call()
        except grpc.RpcError as exc:
            error: BaseException = exc  # grpc is untyped: exc is Any
            return error
        return None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run, list(calls)))


def assert_all_ok(errors: list[BaseException | None]) -> None:
    failed = [f"{e.code().name}: {e.details()}" if isinstance(e, grpc.RpcError) else repr(e) for e in errors if e]
    assert not failed, f"{len(failed)} of {len(errors)} calls failed: {failed[:5]}"


def mount_counts(paths: Iterable[Path]) -> dict[str, int]:
    entries = read_mounts()
    return {str(p): sum(1 for e in entries if e.mount_point == str(p)) for p in paths}


def assert_one_bind_each(paths: list[Path]) -> None:
    counts = mount_counts(paths)
    wrong = {p: n for p, n in counts.items() if n != 1}
    assert not wrong, f"targets without exactly one mount: {wrong}"
    fs_types = {e.fs_type for e in read_mounts() if e.mount_point in counts}
    assert fs_types == {"fuse.juicefs"}


def assert_shared_and_writable(paths: list[Path], tag: str) -> None:
    """A distinct file written through each target is visible through the first one."""
    for index, path in enumerate(paths):
        (path / f"{tag}-{index}.txt").write_text(f"{tag} {index}")
    for index in range(len(paths)):
        assert (paths[0] / f"{tag}-{index}.txt").read_text() == f"{tag} {index}"


def assert_nothing_left(driver: DriverProcess, workdir: Path, targets: Iterable[Path]) -> None:
    wait_until(lambda: not mounts_under(workdir), 5, "everything under the workdir unmounted")
    wait_until(lambda: not driver.client_pids(), 5, "no juicefs client left")
    left = [str(t) for t in targets if t.exists()]
    assert not left, f"target directories not removed: {left[:5]}"


def test_fifty_targets_share_one_client(driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path) -> None:
    targets = [workdir / f"pods/p{i}/volumes/mount" for i in range(50)]

    errors = run_all(functools.partial(driver.publish, VOLUME, t, sqlite_secret, CONTEXT) for t in targets)

    assert_all_ok(errors)
    assert len(driver.client_pids()) == 1
    assert_one_bind_each(targets)
    assert_shared_and_writable(targets, "first")

    errors = run_all(functools.partial(driver.unpublish, VOLUME, t) for t in targets)

    assert_all_ok(errors)
    assert_nothing_left(driver, workdir, targets)


def test_same_target_published_twenty_times_at_once(
    driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path
) -> None:
    target = workdir / "pods/same/volumes/mount"

    errors = run_all([lambda: driver.publish(VOLUME, target, sqlite_secret, CONTEXT)] * 20, workers=20)

    assert_all_ok(errors)
    assert mount_counts([target]) == {str(target): 1}
    assert len(driver.client_pids()) == 1
    (target / "f").write_text("once")
    assert (target / "f").read_text() == "once"

    driver.unpublish(VOLUME, target)
    assert_nothing_left(driver, workdir, [target])


def test_publish_and_unpublish_interleaved(driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path) -> None:
    """Publishes racing unpublishes of the same volume, including the unpublish of its last target.

    The last unpublish stops the client while new publishes want it: they must get a
    client (the old one, or a fresh one once the old has stopped), never an error or a
    bind to a mount point that is going away.
    """

    def publish(t: Path) -> Callable[[], object]:
        return lambda: driver.publish(VOLUME, t, sqlite_secret, CONTEXT)

    def unpublish(t: Path) -> Callable[[], object]:
        return lambda: driver.unpublish(VOLUME, t)

    first = [workdir / f"pods/a{i}/mount" for i in range(10)]
    second = [workdir / f"pods/b{i}/mount" for i in range(10)]
    assert_all_ok(run_all(publish(t) for t in first))

    # Half the old targets go while ten new ones come, all mixed together.
    calls = [c for pair in zip(map(unpublish, first[:5]), map(publish, second), strict=False) for c in pair]
    assert_all_ok(run_all(calls + [publish(t) for t in second[5:]]))

    alive = first[5:] + second
    assert len(driver.client_pids()) == 1
    assert_one_bind_each(alive)
    assert mount_counts(first[:5]) == dict.fromkeys(map(str, first[:5]), 0)
    assert not any(t.exists() for t in first[:5])
    assert_shared_and_writable(alive, "mixed")

    # Every remaining target goes while new ones arrive: the client's last unpublish races publishes.
    for round_ in range(8):
        fresh = [workdir / f"pods/r{round_}-{i}/mount" for i in range(5)]
        calls = [*map(unpublish, alive), *map(publish, fresh)]
        random.Random(round_).shuffle(calls)
        assert_all_ok(run_all(calls))
        assert mount_counts(alive) == dict.fromkeys(map(str, alive), 0), f"round {round_}"
        assert not any(t.exists() for t in alive)
        assert_one_bind_each(fresh)
        assert len(driver.client_pids()) == 1
        assert_shared_and_writable(fresh, f"round{round_}")
        alive = fresh

    # The same target published and unpublished at once ends either published and serving, or gone.
    racing = workdir / "pods/racing/mount"
    for _ in range(3):
        assert_all_ok(run_all([publish(racing), unpublish(racing), publish(racing)]))
        count = mount_counts([racing])[str(racing)]
        assert count in (0, 1)
        assert racing.exists() == bool(count)
        if count:
            (racing / "r").write_text("r")
            assert (alive[0] / "r").read_text() == "r"
    assert len(driver.client_pids()) == 1

    assert_all_ok(run_all(map(unpublish, [*alive, racing])))
    assert_nothing_left(driver, workdir, [*first, *second, *alive, racing])
