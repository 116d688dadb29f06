from pathlib import Path

from tests.support.driver import DriverProcess, mounts_under


def test_publish_share_unpublish(driver: DriverProcess, sqlite_secret: dict[str, str], workdir: Path) -> None:
    a, b = workdir / "pods/a/mount", workdir / "pods/b/mount"
    driver.publish("pv-1", a, sqlite_secret, {"subPath": "pv-1"})
    driver.publish("pv-1", b, sqlite_secret, {"subPath": "pv-1"})
    (a / "f").write_text("shared")
    assert (b / "f").read_text() == "shared"
    assert len(driver.client_pids()) == 1
    driver.unpublish("pv-1", a)
    driver.unpublish("pv-1", b)
    assert not a.exists() and not b.exists()
    assert mounts_under(workdir) == []
