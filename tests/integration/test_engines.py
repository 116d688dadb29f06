"""The driver on every metadata engine and object storage the tests can run: real mounts, secrets kept out of argv."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.backends import PostgresDatabase, RedisDatabase, S3Bucket
from tests.support.driver import DriverProcess, juicefs_processes, mounts_under

pytestmark = pytest.mark.mounts


def publish_round_trip(driver: DriverProcess, workdir: Path, secret: dict[str, str], secrets: list[str]) -> None:
    a, b = workdir / "pods/a/mount", workdir / "pods/b/mount"
    driver.publish("pv-engine", a, secret, {"subPath": "pv-engine"})
    driver.publish("pv-engine", b, secret, {"subPath": "pv-engine"})
    (a / "data.bin").write_bytes(b"x" * (1 << 20))
    assert (b / "data.bin").read_bytes() == b"x" * (1 << 20)
    argvs = [" ".join(argv) for _, argv in juicefs_processes()]
    assert argvs, "the client must be running"
    for value in secrets:
        assert all(value not in argv for argv in argvs)
        assert value not in driver.log_text()
    driver.unpublish("pv-engine", a)
    driver.unpublish("pv-engine", b)
    assert not mounts_under(workdir / "pods")


def test_redis_with_password_and_s3(
    driver: DriverProcess, workdir: Path, redis_db: RedisDatabase, s3_bucket: S3Bucket
) -> None:
    assert redis_db.password
    secret = {
        "name": "redis-s3",
        "metaurl": redis_db.url_with_password,
        "storage": "s3",
        "bucket": s3_bucket.url,
        "access-key": s3_bucket.access_key,
        "secret-key": s3_bucket.secret_key,
    }
    publish_round_trip(driver, workdir, secret, [redis_db.password, s3_bucket.secret_key])


def test_postgres_with_password_and_file_storage(
    driver: DriverProcess, workdir: Path, postgres_db: PostgresDatabase
) -> None:
    secret = {
        "name": "pg-file",
        "metaurl": postgres_db.url_with_password,
        "storage": "file",
        "bucket": f"{workdir / 'bucket'}/",
    }
    publish_round_trip(driver, workdir, secret, [postgres_db.password])
