"""The community-edition volume Secret: parsing, validation, password splitting and redaction."""

from __future__ import annotations

import pytest

from juicefs_csi.errors import InvalidArgument
from juicefs_csi.volume.secrets import (
    REDACTED,
    Credentials,
    MetaURL,
    parse_credentials,
    parse_envs,
    parse_format_options,
    parse_meta_url,
    redact,
)

# A value nobody would type by accident: if it shows up in a message, a secret leaked.
SECRET = "Zq9-S3cr3t-Xy7"
BASE = {"name": "myjfs", "metaurl": "redis://redis.default:6379/1"}


def secret(**extra: str) -> dict[str, str]:
    return {**BASE, **extra}


def full_secret() -> dict[str, str]:
    return {
        "name": "myjfs",
        "metaurl": "redis://:metapass-123@redis.default:6379/1",
        "storage": "s3",
        "bucket": "https://mybucket.s3.us-east-1.amazonaws.com",
        "access-key": "AKIAEXAMPLEACCESS",
        "secret-key": "wJalrXUtnFEMI-secret-key",
        "envs": '{"AWS_REGION": "us-east-1", "MY_TOKEN": "env-token-456"}',
        "format-options": "trash-days=0,session-token=sess-token-789",
    }


# --------------------------------------------------------------------------
# Required keys and the volume name
# --------------------------------------------------------------------------


def test_minimal_secret_parses() -> None:
    creds = parse_credentials(BASE)
    assert creds.name == "myjfs"
    assert creds.meta.scheme == "redis"
    assert creds.meta.url_without_password == "redis://redis.default:6379/1"
    assert creds.storage is None
    assert creds.bucket is None
    assert creds.formats is False
    assert creds.format_flags == ()
    assert creds.format_options == ()
    assert creds.envs == ()
    assert creds.secret_values() == frozenset()


@pytest.mark.parametrize(
    ("secrets", "key"),
    [
        ({"metaurl": "redis://h/1"}, "'name'"),
        ({"name": "", "metaurl": "redis://h/1"}, "'name'"),
        ({"name": "   ", "metaurl": "redis://h/1"}, "'name'"),
        ({"name": "myjfs"}, "'metaurl'"),
        ({"name": "myjfs", "storage": "s3"}, "'metaurl'"),
        ({"name": "myjfs", "metaurl": ""}, "'metaurl'"),
        ({"name": "myjfs", "metaurl": "   "}, "'metaurl'"),
    ],
)
def test_missing_required_key_names_the_key(secrets: dict[str, str], key: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_credentials(secrets)
    assert key in str(info.value)


def test_enterprise_secret_is_explained() -> None:
    with pytest.raises(InvalidArgument, match="enterprise"):
        parse_credentials({"name": "myjfs", "token": "abc"})


@pytest.mark.parametrize("name", ["abc", "my-jfs", "0vol", "vol-1-2", "a" * 63, "  myjfs  "])
def test_valid_volume_names(name: str) -> None:
    assert parse_credentials(secret(name=name)).name == name.strip()


@pytest.mark.parametrize(
    "name",
    ["ab", "a" * 64, "-abc", "abc-", "MyJfs", "my_jfs", "my.jfs", "my jfs", "my/jfs", "vol;rm", "vøl"],
)
def test_invalid_volume_names_are_rejected(name: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_credentials(secret(name=name))
    assert "'name'" in str(info.value)


# --------------------------------------------------------------------------
# Meta URLs
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "metaurl",
    [
        "http://h:80/1",
        "https://h/1",
        "ftp://h/1",
        "s3://bucket/x",
        "file:///var/meta",
        "mongodb://h:27017/db",
        "sqlite://meta.db",
        "://h/1",
    ],
)
def test_unsupported_meta_schemes_are_rejected(metaurl: str) -> None:
    with pytest.raises(InvalidArgument, match="unsupported scheme"):
        parse_meta_url(metaurl)


@pytest.mark.parametrize("metaurl", ["postgresql://u:pw@h:5432/db", "fdb:///etc/fdb.cluster?prefix=jfs"])
def test_schemes_the_pinned_client_does_not_know_are_rejected(metaurl: str) -> None:
    with pytest.raises(InvalidArgument, match="unsupported scheme"):
        parse_meta_url(metaurl)


@pytest.mark.parametrize(
    "metaurl",
    [
        "redis://h:6379/1",
        "rediss://h:6379/1",
        "unix:///var/run/redis.sock",
        "tikv://h1:2379,h2:2379/jfs",
        "sqlite3:///var/lib/jfs/meta.db",
        "mysql://u@(h:3306)/db",
        "postgres://u@h:5432/db",
        "badger:///var/lib/jfs/badger",
        "etcd://h:2379/jfs",
        "memkv://jfs",
    ],
)
def test_supported_meta_schemes(metaurl: str) -> None:
    meta = parse_meta_url(metaurl)
    assert meta.scheme == metaurl.split("://", maxsplit=1)[0]
    assert meta.url_without_password == metaurl
    assert meta.password is None


@pytest.mark.parametrize("metaurl", ["redis://", "redis:///", "mysql://", "postgres:///"])
def test_meta_url_without_host_is_rejected(metaurl: str) -> None:
    with pytest.raises(InvalidArgument, match="no host"):
        parse_meta_url(metaurl)


@pytest.mark.parametrize("metaurl", ["redis://h\n:6379/1", "redis://h:6379/1\x00", "redis://h\t/1", "redis://h\x7f/1"])
def test_meta_url_with_control_characters_is_rejected(metaurl: str) -> None:
    with pytest.raises(InvalidArgument, match="control characters"):
        parse_meta_url(metaurl)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("redis.default:6379/1", "redis://redis.default:6379/1"),
        ("localhost", "redis://localhost"),
        ("  h:6379/2  ", "redis://h:6379/2"),
    ],
)
def test_meta_url_without_scheme_means_redis(raw: str, expected: str) -> None:
    meta = parse_meta_url(raw)
    assert meta.scheme == "redis"
    assert meta.url_without_password == expected


@pytest.mark.parametrize(
    ("raw", "without", "password", "redacted"),
    [
        ("redis://:pw-123@h:6379/1", "redis://h:6379/1", "pw-123", "redis://:****@h:6379/1"),
        ("redis://user:pw-123@h/1", "redis://user@h/1", "pw-123", "redis://user:****@h/1"),
        ("rediss://:pw-123@h:6380/1", "rediss://h:6380/1", "pw-123", "rediss://:****@h:6380/1"),
        ("REDIS://:pw-123@h/1", "redis://h/1", "pw-123", "redis://:****@h/1"),
        (":pw-123@h:6379/1", "redis://h:6379/1", "pw-123", "redis://:****@h:6379/1"),
        (
            "postgres://u:pw-123@h:5432/db?sslmode=disable",
            "postgres://u@h:5432/db?sslmode=disable",
            "pw-123",
            "postgres://u:****@h:5432/db?sslmode=disable",
        ),
        ("mysql://u:pw-123@(h:3306)/db", "mysql://u@(h:3306)/db", "pw-123", "mysql://u:****@(h:3306)/db"),
        ("mysql://u:pw-123@tcp(h:3306)/db", "mysql://u@tcp(h:3306)/db", "pw-123", "mysql://u:****@tcp(h:3306)/db"),
        (
            "tikv://u:pw-123@h1:2379,h2:2379/jfs",
            "tikv://u@h1:2379,h2:2379/jfs",
            "pw-123",
            "tikv://u:****@h1:2379,h2:2379/jfs",
        ),
        # Percent-encoded passwords are decoded: the client receives the real password.
        ("redis://:p%40ss%2Fw%3Ard@h/1", "redis://h/1", "p@ss/w:rd", "redis://:****@h/1"),
        ("postgres://u:a%20b%25c@h/db", "postgres://u@h/db", "a b%c", "postgres://u:****@h/db"),
        # An unescaped '@' in the password: the host starts after the last '@'.
        ("redis://:p@ss@h:6379/1", "redis://h:6379/1", "p@ss", "redis://:****@h:6379/1"),
        ("mysql://u:p@ss@(h:3306)/db", "mysql://u@(h:3306)/db", "p@ss", "mysql://u:****@(h:3306)/db"),
        # A ':' inside the password is part of the password.
        ("redis://user:a:b:c@h/1", "redis://user@h/1", "a:b:c", "redis://user:****@h/1"),
    ],
)
def test_password_is_split_off(raw: str, without: str, password: str, redacted: str) -> None:
    meta = parse_meta_url(raw)
    assert meta.url_without_password == without
    assert meta.password == password
    assert meta.redacted == redacted
    assert str(meta) == redacted
    assert REDACTED in meta.redacted
    assert password not in meta.url_without_password
    assert password not in meta.redacted
    assert password not in repr(meta)


def test_mysql_password_with_slash_is_split_off() -> None:
    meta = parse_meta_url("mysql://u:pa/ss-123@(h:3306)/db")
    assert meta.password == "pa/ss-123"
    assert meta.url_without_password == "mysql://u@(h:3306)/db"
    assert "pa/ss-123" not in meta.redacted


@pytest.mark.parametrize(
    ("raw", "without"),
    [
        ("redis://user@h/1", "redis://user@h/1"),
        ("redis://user:@h/1", "redis://user@h/1"),
        ("redis://:@h/1", "redis://h/1"),
        ("mysql://u:@(h:3306)/db", "mysql://u@(h:3306)/db"),
    ],
)
def test_empty_password_is_no_password(raw: str, without: str) -> None:
    meta = parse_meta_url(raw)
    assert meta.password is None
    assert meta.url_without_password == without
    assert REDACTED not in meta.redacted


@pytest.mark.parametrize(
    "raw", ["sqlite3:///var/lib/jfs/meta.db", "sqlite3://meta.db", "sqlite3:///tmp/a@b.db", "badger:///data/meta"]
)
def test_sqlite_and_badger_have_no_password(raw: str) -> None:
    meta = parse_meta_url(raw)
    assert meta.password is None
    assert meta.url_without_password == raw
    assert meta.redacted == raw


def test_credentials_and_meta_reprs_hold_no_secret() -> None:
    creds = parse_credentials(full_secret())
    text = repr(creds) + repr(creds.meta) + str(creds.meta)
    for value in ("metapass-123", "AKIAEXAMPLEACCESS", "wJalrXUtnFEMI-secret-key", "sess-token-789", "env-token-456"):
        assert value not in text


# --------------------------------------------------------------------------
# Object storage credentials, format flags and options
# --------------------------------------------------------------------------


def test_full_secret_parses() -> None:
    creds = parse_credentials(full_secret())
    assert creds.storage == "s3"
    assert creds.bucket == "https://mybucket.s3.us-east-1.amazonaws.com"
    assert creds.access_key == "AKIAEXAMPLEACCESS"
    assert creds.secret_key == "wJalrXUtnFEMI-secret-key"
    assert creds.meta.password == "metapass-123"
    assert creds.formats is True
    assert creds.format_options == (("trash-days", "0"),)
    assert creds.secret_format_env == (("SESSION_TOKEN", "sess-token-789"),)
    assert creds.envs == (("AWS_REGION", "us-east-1"), ("MY_TOKEN", "env-token-456"))


@pytest.mark.parametrize(
    ("extra", "access", "secret_key"),
    [
        ({"access-key": "ak-1", "secret-key": "sk-1"}, "ak-1", "sk-1"),
        ({"accesskey": "ak-2", "secretkey": "sk-2"}, "ak-2", "sk-2"),
        ({"access-key": "ak-1", "accesskey": "ak-2"}, "ak-1", None),
        ({"access-key": "", "accesskey": "ak-2"}, "ak-2", None),
        ({"access-key": "  ak-3\n", "secret-key": "sk-3\n"}, "ak-3", "sk-3"),
    ],
)
def test_access_and_secret_key_spellings(extra: dict[str, str], access: str | None, secret_key: str | None) -> None:
    creds = parse_credentials(secret(**extra))
    assert creds.access_key == access
    assert creds.secret_key == secret_key


def test_secret_values_contains_every_secret() -> None:
    creds = parse_credentials(full_secret())
    assert {"metapass-123", "AKIAEXAMPLEACCESS", "wJalrXUtnFEMI-secret-key", "sess-token-789", "env-token-456"} <= (
        creds.secret_values()
    )
    assert "" not in creds.secret_values()


@pytest.mark.parametrize("storage", [None, "", "s3"])
def test_formats_only_when_storage_is_named(storage: str | None) -> None:
    extra = {} if storage is None else {"storage": storage}
    assert parse_credentials(secret(**extra)).formats is bool(storage)


@pytest.mark.parametrize("key", ["storage", "bucket"])
@pytest.mark.parametrize("value", ["s3\x00x", "a\nb", "a\tb"])
def test_storage_and_bucket_with_control_characters_are_rejected(key: str, value: str) -> None:
    with pytest.raises(InvalidArgument, match=key):
        parse_credentials(secret(**{key: value}))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("block-size", "4096"),
        ("compress", "none"),
        ("compress", "lz4"),
        ("compress", "zstd"),
        ("trash-days", "0"),
        ("capacity", "100"),
        ("inodes", "1000000"),
        ("shards", "0"),
    ],
)
def test_valid_format_flags(key: str, value: str) -> None:
    assert parse_credentials(secret(**{key: value})).format_flags == ((key, value),)


def test_format_flags_keep_a_fixed_order() -> None:
    creds = parse_credentials(secret(shards="2", compress="lz4", **{"block-size": "4096", "trash-days": "1"}))
    assert creds.format_flags == (("block-size", "4096"), ("compress", "lz4"), ("trash-days", "1"), ("shards", "2"))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("block-size", "4k"),
        ("block-size", "-1"),
        ("trash-days", "1.5"),
        ("capacity", "10G"),
        ("inodes", "1e6"),
        ("shards", "two"),
        ("compress", "gzip"),
        ("compress", "LZ4"),
    ],
)
def test_invalid_format_flags_are_rejected(key: str, value: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_credentials(secret(**{key: value}))
    assert repr(key) in str(info.value)


@pytest.mark.parametrize("value", ["²", "①", "٣"])
def test_numeric_format_flags_accept_ascii_digits_only(value: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_credentials(secret(**{"block-size": value}))


@pytest.mark.parametrize(
    ("raw", "options", "env"),
    [
        ("", (), ()),
        ("trash-days=0", (("trash-days", "0"),), ()),
        ("trash-days=0,enable-acl", (("trash-days", "0"), ("enable-acl", None)), ()),
        (" trash-days = 1 , , hash-prefix ", (("trash-days", "1"), ("hash-prefix", None)), ()),
        ("--trash-days=2", (("trash-days", "2"),), ()),
        ("session-token=tok-1", (), (("SESSION_TOKEN", "tok-1"),)),
        ("--session-token=tok-1,trash-days=0", (("trash-days", "0"),), (("SESSION_TOKEN", "tok-1"),)),
        ("access-key=ak,secret-key=sk", (), (("ACCESS_KEY", "ak"), ("SECRET_KEY", "sk"))),
        ("storage-class=STANDARD_IA", (("storage-class", "STANDARD_IA"),), ()),
    ],
)
def test_format_options(
    raw: str, options: tuple[tuple[str, str | None], ...], env: tuple[tuple[str, str], ...]
) -> None:
    assert parse_format_options(raw) == (options, env)


def test_session_token_goes_to_env_not_options() -> None:
    creds = parse_credentials(secret(**{"format-options": f"session-token={SECRET},trash-days=0"}))
    assert ("SESSION_TOKEN", SECRET) in creds.secret_format_env
    assert all(SECRET not in f"{k}={v}" for k, v in creds.format_options)
    assert all(k != "session-token" for k, _ in creds.format_options)
    assert SECRET in creds.secret_values()


@pytest.mark.parametrize("raw", ["Trash-Days=1", "trash_days=1", "1x=2", "a b=1", "a;b", "$(id)=1", "=1"])
def test_format_options_with_invalid_names_are_rejected(raw: str) -> None:
    with pytest.raises(InvalidArgument, match="format-options"):
        parse_format_options(raw)


@pytest.mark.parametrize("raw", ["trash-days=1\x00", "storage-class=a\nb"])
def test_format_options_with_control_characters_are_rejected(raw: str) -> None:
    with pytest.raises(InvalidArgument, match="control characters"):
        parse_format_options(raw)


@pytest.mark.parametrize(
    "extra",
    [
        {"access-key": "ak\x00x"},
        {"secret-key": "sk\x00x"},
        {"format-options": "session-token=tok\x00x"},
    ],
)
def test_credentials_with_nul_bytes_are_rejected(extra: dict[str, str]) -> None:
    with pytest.raises(InvalidArgument):
        parse_credentials(secret(**extra))


# --------------------------------------------------------------------------
# envs
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", ()),
        ("   ", ()),
        ("{}", ()),
        ("A: 1\nB: x", (("A", "1"), ("B", "x"))),
        ('{"B": "x", "A": "1"}', (("A", "1"), ("B", "x"))),
        ('{"FLAG": true, "OFF": false}', (("FLAG", "true"), ("OFF", "false"))),
        ("EMPTY:", (("EMPTY", ""),)),
        ('{"EMPTY": null}', (("EMPTY", ""),)),
        ("_X1: 'a b: c'", (("_X1", "a b: c"),)),
        ("lower_case: v", (("lower_case", "v"),)),
        ('{"N": 1.5}', (("N", "1.5"),)),
    ],
)
def test_envs_yaml_and_json(raw: str, expected: tuple[tuple[str, str], ...]) -> None:
    assert parse_envs(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ['{"1A": "x"}', '{"A-B": "x"}', '{"A B": "x"}', '{"A.B": "x"}', "1: x", '{"": "x"}', '{"A$": "x"}'],
)
def test_envs_with_invalid_names_are_rejected(raw: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid variable name"):
        parse_envs(raw)


def test_env_name_with_trailing_newline_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match="invalid variable name"):
        parse_envs('{"FOO\\n": "x"}')


@pytest.mark.parametrize("raw", ['{"A": {"B": "c"}}', '{"A": [1, 2]}', "A:\n  B: c", "A:\n  - x"])
def test_envs_with_nested_values_are_rejected(raw: str) -> None:
    with pytest.raises(InvalidArgument, match="scalar"):
        parse_envs(raw)


@pytest.mark.parametrize("raw", ["[1, 2]", "just a string", "42", "- A=1"])
def test_envs_that_are_not_a_map_are_rejected(raw: str) -> None:
    with pytest.raises(InvalidArgument, match="map"):
        parse_envs(raw)


@pytest.mark.parametrize("raw", ['{"A": "x"', "A: [", "A: b: c", "\tA: 1"])
def test_envs_that_do_not_parse_are_rejected(raw: str) -> None:
    with pytest.raises(InvalidArgument, match="YAML/JSON"):
        parse_envs(raw)


def test_envs_with_nul_value_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match="NUL"):
        parse_envs('A: "x\\0y"')


# --------------------------------------------------------------------------
# No error message ever carries a secret
# --------------------------------------------------------------------------

LEAK_CASES: list[dict[str, str]] = [
    {"metaurl": f"ftp://u:{SECRET}@h/1"},
    {"metaurl": f"http://:{SECRET}@h:80/1"},
    {"metaurl": f"redis://:{SECRET}\t@h/1"},
    {"metaurl": f"redis://:{SECRET}@h/1\x00"},
    {"metaurl": f"redis://:{SECRET}@h/1", "name": "Bad_Name"},
    {"metaurl": f"redis://:{SECRET}@h/1", "compress": "gzip"},
    {"access-key": SECRET, "block-size": "4k"},
    {"secret-key": SECRET, "storage": "s3\x01"},
    {"secret-key": SECRET, "bucket": "b\nx"},
    {"format-options": f"session-token={SECRET},Bad=1"},
    {"format-options": f"trash-days=1\x00,session-token={SECRET}"},
    {"format-options": f"session-token={SECRET},storage-class=a\nb"},
    {"envs": f'{{"TOKEN": {{"nested": "{SECRET}"}}}}'},
    {"envs": f'{{"TOKEN": ["{SECRET}"]}}'},
    {"envs": f'{{"bad-name": "{SECRET}"}}'},
    {"envs": f'{{"TOKEN": "{SECRET}\\u0000"}}'},
    {"envs": f"- {SECRET}"},
    {"envs": f'{{"TOKEN": "{SECRET}"'},
    {"envs": f"TOKEN: {SECRET}: x"},
    {"envs": f"{SECRET}"},
]

LEAKING_CASES: list[dict[str, str]] = [
    # An option written with ':' or ' ' instead of '=' is echoed whole as its "name".
    {"format-options": f"trash-days=1,session-token:{SECRET}"},
    {"format-options": f"secret-key {SECRET}"},
    {"format-options": SECRET},
    # A dotenv-style line inside `envs` is echoed whole as the variable "name".
    {"envs": f'{{"TOKEN={SECRET}": 1}}'},
]


@pytest.mark.parametrize(
    "extra",
    [
        *LEAK_CASES,
        *LEAKING_CASES,
    ],
)
def test_error_messages_never_contain_a_secret(extra: dict[str, str]) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_credentials(secret(**extra))
    assert SECRET not in str(info.value)
    assert SECRET not in info.value.message


# --------------------------------------------------------------------------
# redact
# --------------------------------------------------------------------------


def test_redact_replaces_every_secret() -> None:
    creds = parse_credentials(full_secret())
    text = " | ".join(sorted(creds.secret_values())) + " and redis://:metapass-123@h/1"
    out = redact(text, creds.secret_values())
    for value in creds.secret_values():
        assert value not in out
    assert out.count(REDACTED) == len(creds.secret_values()) + 1


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("token abcdef and abc", ["abc", "abcdef"], "token **** and ****"),
        ("nothing here", ["secret"], "nothing here"),
        ("pw=ab", ["ab"], "pw=ab"),
        ("x=abc", ["abc", "", "abc"], "x=****"),
        ("", ["abc"], ""),
    ],
)
def test_redact(text: str, values: list[str], expected: str) -> None:
    assert redact(text, values) == expected


def test_credentials_is_frozen() -> None:
    creds = parse_credentials(BASE)
    assert isinstance(creds, Credentials)
    assert isinstance(creds.meta, MetaURL)
    with pytest.raises(AttributeError):
        creds.name = "other"  # type: ignore[misc]
