"""Real metadata engines and object storage on 127.0.0.1 for integration tests.

Each backend is a context manager (``start_redis``, ``start_postgres``, ``start_s3``) and a
session-scoped pytest fixture. They run as child processes on random free loopback ports in
temporary directories, so tests never depend on services installed on the machine and never
touch anything outside their temporary directories. Every backend requires credentials, so a
test that forgets to pass a password or key fails instead of passing by accident.

Use the fixtures from a test module or conftest with ``pytest_plugins = ["tests.support.backends"]``.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import hmac
import importlib.util
import itertools
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
import redis

__all__ = [
    "SETUP_HINT",
    "BackendUnavailableError",
    "PostgresDatabase",
    "PostgresServer",
    "RedisDatabase",
    "RedisServer",
    "S3Bucket",
    "S3Server",
    "free_port",
    "postgres_db",
    "postgres_server",
    "redis_db",
    "redis_server",
    "redis_server_without_password",
    "s3_bucket",
    "s3_server",
    "start_postgres",
    "start_redis",
    "start_s3",
]

SETUP_HINT = "run `scripts/setup.sh --dev` (as root) to install the test dependencies"
LOOPBACK = "127.0.0.1"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_OS_USER = "postgres"
REDIS_DATABASES = 4096
S3_REGION = "us-east-1"
STARTUP_TIMEOUT = 60.0

T = TypeVar("T")


class BackendUnavailableError(RuntimeError):
    """A backend cannot start because something is not installed (or we are not root)."""


# --------------------------------------------------------------------------------------------
# small helpers


def free_port() -> int:
    """Ask the kernel for a free loopback TCP port (tiny race window, acceptable for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def new_secret() -> str:
    """A random password that is safe in URLs, SQL literals and argv without quoting."""
    return secrets.token_hex(16)


def require_binary(name: str, package: str) -> str:
    """Return the path of an executable or explain which package the setup script must install."""
    found = shutil.which(name) if os.sep not in name else (name if os.access(name, os.X_OK) else None)
    if found is None:
        raise BackendUnavailableError(f"`{name}` not found (Debian package `{package}`): {SETUP_HINT}")
    return found


def require_module(module: str, package: str) -> None:
    """Fail clearly when a Python package needed by a backend is not installed in the venv."""
    if importlib.util.find_spec(module) is None:
        raise BackendUnavailableError(f"Python module `{module}` not found (pip `{package}`): {SETUP_HINT}")


def _log_tail(log: Path, limit: int = 4000) -> str:
    try:
        return log.read_text(errors="replace")[-limit:]
    except OSError:
        return "<no log>"


def _wait_until(ready: Callable[[], bool], *, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``ready`` until it is true; fail early with the log if the process died."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}:\n{_log_tail(log)}")
        if ready():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready after {STARTUP_TIMEOUT:.0f}s:\n{_log_tail(log)}")


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    """Stop a child cleanly, then forcibly, so no server outlives the test session."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def _spawn(argv: list[str], log: Path, cwd: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)


# --------------------------------------------------------------------------------------------
# Redis


@dataclass(frozen=True)
class RedisDatabase:
    """One Redis DB index: a fresh, empty JuiceFS metadata namespace (JuiceFS has no key prefix)."""

    index: int
    url_without_password: str
    url_with_password: str
    password: str | None


@dataclass(frozen=True)
class RedisServer:
    """A running redis-server. URLs have no DB index; use ``create_database`` for meta URLs."""

    host: str
    port: int
    password: str | None
    url_without_password: str
    url_with_password: str
    _next_index: Iterator[int] = field(default_factory=lambda: itertools.count(1), repr=False, compare=False)

    def client(self, db: int = 0) -> redis.Redis:
        """A redis-py client for assertions on the raw keys."""
        return redis.Redis(host=self.host, port=self.port, db=db, password=self.password)

    def create_database(self) -> RedisDatabase:
        """Hand out a DB index never used before in this session, flushed to be sure it is empty."""
        index = next(self._next_index)
        if index >= REDIS_DATABASES:
            raise RuntimeError(f"all {REDIS_DATABASES} Redis databases used; raise REDIS_DATABASES")
        with self.client(index) as client:
            client.flushdb()
        return RedisDatabase(
            index=index,
            url_without_password=f"{self.url_without_password}/{index}",
            url_with_password=f"{self.url_with_password}/{index}",
            password=self.password,
        )


@contextlib.contextmanager
def start_redis(*, with_password: bool = True) -> Iterator[RedisServer]:
    """Run redis-server without persistence; with ``requirepass`` unless told otherwise."""
    binary = require_binary("redis-server", "redis-server")
    port = free_port()
    password = new_secret() if with_password else None
    with tempfile.TemporaryDirectory(prefix="jfs-redis-") as tmp:
        workdir = Path(tmp)
        log = workdir / "redis.log"
        argv = [
            binary, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
            "--dir", str(workdir), "--databases", str(REDIS_DATABASES), "--daemonize", "no",
        ]  # fmt: skip
        if password is not None:
            argv += ["--requirepass", password]
        proc = _spawn(argv, log, workdir)
        try:
            authority = f"{LOOPBACK}:{port}"
            server = RedisServer(
                host=LOOPBACK,
                port=port,
                password=password,
                url_without_password=f"redis://{authority}",
                url_with_password=f"redis://:{password}@{authority}" if password else f"redis://{authority}",
            )

            def ping() -> bool:
                try:
                    with server.client() as client:
                        return bool(client.ping())
                except redis.ConnectionError:
                    return False

            _wait_until(ping, what="redis-server", proc=proc, log=log)
            yield server
        finally:
            _stop(proc)


# --------------------------------------------------------------------------------------------
# PostgreSQL


@dataclass(frozen=True)
class PostgresDatabase:
    """A database owned by the test role: a fresh, empty JuiceFS metadata namespace."""

    host: str
    port: int
    user: str
    password: str
    database: str
    url_without_password: str
    url_with_password: str


def _pg_urls(host: str, port: int, user: str, password: str, database: str) -> tuple[str, str]:
    """JuiceFS metaurls; the user must be in the URL (``postgres://host/db`` is rejected)."""
    tail = f"{host}:{port}/{database}?sslmode=disable"
    return f"postgres://{user}@{tail}", f"postgres://{user}:{password}@{tail}"


@dataclass(frozen=True)
class PostgresServer:
    """A running PostgreSQL 15 with scram-sha-256 over TCP, so the password really matters."""

    host: str
    port: int
    user: str
    password: str
    database: str
    url_without_password: str
    url_with_password: str
    socket_dir: Path = field(repr=False)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser over the unix socket (trusted; we are root)."""
        argv = [
            str(PG_BIN / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-h", str(self.socket_dir), "-p", str(self.port), "-U", PG_OS_USER, "-d", database, "-c", sql,
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"psql failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def create_database(self) -> PostgresDatabase:
        """Create a new, empty database owned by the test role."""
        name = f"jfs_{secrets.token_hex(6)}"
        self.psql(f'CREATE DATABASE "{name}" OWNER "{self.user}"')
        without, with_ = _pg_urls(self.host, self.port, self.user, self.password, name)
        return PostgresDatabase(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            database=name,
            url_without_password=without,
            url_with_password=with_,
        )


@contextlib.contextmanager
def start_postgres() -> Iterator[PostgresServer]:
    """initdb + postgres as the ``postgres`` OS user (postgres refuses root) in a temp dir."""
    for tool in ("initdb", "postgres", "psql", "pg_isready"):
        require_binary(str(PG_BIN / tool), "postgresql-15")
    setpriv = require_binary("setpriv", "util-linux")
    if os.geteuid() != 0:
        raise BackendUnavailableError("the PostgreSQL fixture must run as root (it switches to `postgres`)")
    try:
        pg_user = pwd.getpwnam(PG_OS_USER)
    except KeyError:
        raise BackendUnavailableError(f"OS user `{PG_OS_USER}` missing (package postgresql): {SETUP_HINT}") from None
    # setpriv execs in place (unlike runuser, which forks), so signals reach postgres itself.
    as_pg = [setpriv, f"--reuid={pg_user.pw_uid}", f"--regid={pg_user.pw_gid}", "--init-groups", "--"]
    port = free_port()
    user, password, database = "jfs", new_secret(), "jfs"
    with tempfile.TemporaryDirectory(prefix="jfs-pg-") as tmp:
        workdir = Path(tmp)
        os.chown(workdir, pg_user.pw_uid, pg_user.pw_gid)
        data, log = workdir / "data", workdir / "postgres.log"
        initdb = [
            *as_pg, str(PG_BIN / "initdb"), "-D", str(data), "-U", PG_OS_USER, "-E", "UTF8",
            "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "--no-instructions",
        ]  # fmt: skip
        done = subprocess.run(initdb, cwd=workdir, capture_output=True, text=True, check=False, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        log.touch()
        os.chown(log, pg_user.pw_uid, pg_user.pw_gid)
        server_argv = [
            *as_pg, str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port), "-k", str(workdir),
            "-c", f"listen_addresses={LOOPBACK}", "-c", "password_encryption=scram-sha-256",
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "max_connections=300",
        ]  # fmt: skip
        proc = _spawn(server_argv, log, workdir)
        try:

            def accepting() -> bool:
                argv = [str(PG_BIN / "pg_isready"), "-q", "-h", LOOPBACK, "-p", str(port)]
                return subprocess.run(argv, check=False, timeout=30).returncode == 0

            _wait_until(accepting, what="postgres", proc=proc, log=log)
            without, with_ = _pg_urls(LOOPBACK, port, user, password, database)
            server = PostgresServer(
                host=LOOPBACK,
                port=port,
                user=user,
                password=password,
                database=database,
                url_without_password=without,
                url_with_password=with_,
                socket_dir=workdir,
            )
            server.psql(f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{password}'")
            server.psql(f'CREATE DATABASE "{database}" OWNER "{user}"')
            yield server
        finally:
            _stop(proc, signal.SIGINT, timeout=30)  # SIGINT = "fast" shutdown


# --------------------------------------------------------------------------------------------
# S3 (moto)


def sigv4_headers(
    method: str,
    url: str,
    body: bytes,
    *,
    access_key: str,
    secret_key: str,
    service: str,
    region: str = S3_REGION,
    headers: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """AWS Signature V4 headers, so the fixtures need no boto3 (untyped) and moto can enforce auth."""
    parts = urllib.parse.urlsplit(url)
    now = datetime.datetime.now(datetime.UTC)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(body).hexdigest()
    signed = {"host": parts.netloc, "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash}
    signed.update({k.lower(): v for k, v in (headers or {}).items()})
    names = sorted(signed)
    query = sorted(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    canonical = "\n".join(
        [
            method,
            urllib.parse.quote(parts.path or "/", safe="/-_.~"),
            "&".join(f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}" for k, v in query),
            "".join(f"{name}:{signed[name].strip()}\n" for name in names),
            ";".join(names),
            payload_hash,
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = ("AWS4" + secret_key).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    signed["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    del signed["host"]  # urllib sets it itself
    return signed


# Loopback services must never be reached through an http_proxy from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(method: str, url: str, body: bytes = b"", headers: Mapping[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body or None, method=method, headers=dict(headers or {}))
    try:
        with _NO_PROXY.open(request, timeout=30) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


@dataclass(frozen=True)
class S3Bucket:
    """One bucket; ``url`` is what ``juicefs format --storage s3 --bucket`` takes (path style)."""

    name: str
    url: str
    endpoint: str
    access_key: str
    secret_key: str


@dataclass(frozen=True)
class S3Server:
    """A moto S3 server that checks SigV4 signatures against an IAM user's real keys."""

    endpoint: str
    bucket: str
    bucket_url: str
    access_key: str
    secret_key: str
    region: str = S3_REGION

    def request(
        self, method: str, url: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> tuple[int, str]:
        """A signed S3 request with the server's keys; returns (status, body)."""
        signed = sigv4_headers(
            method,
            url,
            body,
            access_key=self.access_key,
            secret_key=self.secret_key,
            service="s3",
            region=self.region,
            headers=headers,
        )
        return _http(method, url, body, signed)

    def create_bucket(self) -> S3Bucket:
        """Create a new, empty bucket with a random name."""
        name = f"jfs-{secrets.token_hex(8)}"
        url = f"{self.endpoint}/{name}"
        status, text = self.request("PUT", url)
        if status != 200:
            raise RuntimeError(f"CreateBucket {name} failed: HTTP {status} {text[:500]}")
        return S3Bucket(name, url, self.endpoint, self.access_key, self.secret_key)

    def object_keys(self, bucket_url: str) -> list[str]:
        """Keys in a bucket (first 1000), to check that data really reached object storage."""
        status, text = self.request("GET", f"{bucket_url}?list-type=2")
        if status != 200:
            raise RuntimeError(f"ListObjectsV2 failed: HTTP {status} {text[:500]}")
        return re.findall(r"<Key>(.*?)</Key>", text)


def _iam_call(endpoint: str, params: Mapping[str, str]) -> str:
    """An IAM query-API call, sent before auth is enforced (so any signature is accepted)."""
    body = urllib.parse.urlencode({**params, "Version": "2010-05-08"}).encode()
    headers = sigv4_headers(
        "POST",
        f"{endpoint}/",
        body,
        access_key="bootstrap",
        secret_key="bootstrap",
        service="iam",
        headers={"content-type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    status, text = _http("POST", f"{endpoint}/", body, headers)
    if status != 200:
        raise RuntimeError(f"moto IAM {params.get('Action')} failed: HTTP {status} {text[:500]}")
    return text


def _xml_value(text: str, tag: str) -> str:
    match = re.search(rf"<{tag}>(.*?)</{tag}>", text)
    if match is None:
        raise RuntimeError(f"<{tag}> missing in moto response: {text[:500]}")
    return match.group(1)


@contextlib.contextmanager
def start_s3() -> Iterator[S3Server]:
    """Run ``python -m moto.server`` and turn on its signature checks with fresh IAM keys.

    moto accepts any key by default, which would hide a test that forgets to pass keys; after
    POST /moto-api/reset-auth with 0, every request must be signed by a known IAM key.
    """
    require_module("moto.server", "moto[server]==5.2.5")
    require_module("flask", "moto[server]==5.2.5")
    port = free_port()
    endpoint = f"http://{LOOPBACK}:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
    with tempfile.TemporaryDirectory(prefix="jfs-moto-") as tmp:
        workdir = Path(tmp)
        log = workdir / "moto.log"
        proc = _spawn([sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)], log, workdir, env)
        try:

            def answering() -> bool:
                try:
                    return _http("GET", f"{endpoint}/moto-api/data.json")[0] == 200
                except OSError:
                    return False

            _wait_until(answering, what="moto", proc=proc, log=log)
            user = "juicefs-test"
            _iam_call(endpoint, {"Action": "CreateUser", "UserName": user})
            policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
            _iam_call(
                endpoint,
                {
                    "Action": "PutUserPolicy",
                    "UserName": user,
                    "PolicyName": "all",
                    "PolicyDocument": json.dumps(policy),
                },
            )
            created = _iam_call(endpoint, {"Action": "CreateAccessKey", "UserName": user})
            access_key, secret_key = _xml_value(created, "AccessKeyId"), _xml_value(created, "SecretAccessKey")
            status, text = _http("POST", f"{endpoint}/moto-api/reset-auth", b"0", {"Content-Type": "text/plain"})
            if status != 200:
                raise RuntimeError(f"moto reset-auth failed: HTTP {status} {text[:500]}")
            server = S3Server(endpoint, "", "", access_key, "wrong-secret")
            probe = server.request("PUT", f"{endpoint}/auth-probe")[0]
            if probe != 403:
                raise RuntimeError(f"moto accepted a wrong secret key (HTTP {probe}); auth is not enforced")
            server = S3Server(endpoint, "", "", access_key, secret_key)
            first = server.create_bucket()
            yield S3Server(endpoint, first.name, first.url, access_key, secret_key)
        finally:
            _stop(proc)


# --------------------------------------------------------------------------------------------
# pytest fixtures


def _fixture_from(manager: AbstractContextManager[T]) -> Iterator[T]:
    """Enter a backend; a missing dependency fails the test loudly instead of skipping it."""
    with contextlib.ExitStack() as stack:
        yield _enter_or_fail(stack, manager)


def _enter_or_fail(stack: contextlib.ExitStack, manager: AbstractContextManager[T]) -> T:
    try:
        return stack.enter_context(manager)
    except BackendUnavailableError as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)  # outside `except`: no chained traceback in the report


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """Password-protected Redis (``--requirepass``) for the whole session."""
    yield from _fixture_from(start_redis(with_password=True))


@pytest.fixture(scope="session")
def redis_server_without_password() -> Iterator[RedisServer]:
    """Redis without a password, for code paths that must also work unauthenticated."""
    yield from _fixture_from(start_redis(with_password=False))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """PostgreSQL 15 with a password-authenticated role for the whole session."""
    yield from _fixture_from(start_postgres())


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto S3 with enforced SigV4 keys for the whole session."""
    yield from _fixture_from(start_s3())


@pytest.fixture
def redis_db(redis_server: RedisServer) -> RedisDatabase:
    """A fresh, empty Redis DB index on the password-protected server."""
    return redis_server.create_database()


@pytest.fixture
def postgres_db(postgres_server: PostgresServer) -> PostgresDatabase:
    """A fresh, empty PostgreSQL database owned by the test role."""
    return postgres_server.create_database()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> S3Bucket:
    """A fresh, empty S3 bucket."""
    return s3_server.create_bucket()
