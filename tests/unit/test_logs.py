"""Structured logs: one JSON object per line, or text with key=value pairs."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from juicefs_csi.logs import JsonFormatter, TextFormatter, configure_logging

TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def record(
    msg: str = "volume published",
    args: tuple[Any, ...] = (),
    level: int = logging.INFO,
    extra: dict[str, Any] | None = None,
    exc: bool = False,
) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("kaboom")
        except RuntimeError:
            exc_info = sys.exc_info()
    made = logging.getLogger("juicefs_csi.node").makeRecord(
        "juicefs_csi.node", level, __file__, 10, msg, args, exc_info, extra=extra
    )
    made.created = 1_700_000_000.123456
    return made


# --------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------


def test_json_has_the_standard_keys() -> None:
    line = JsonFormatter().format(record())
    entry = json.loads(line)
    assert entry == {
        "ts": "2023-11-14T22:13:20.123Z",
        "level": "info",
        "logger": "juicefs_csi.node",
        "msg": "volume published",
    }


@pytest.mark.parametrize(
    ("level", "name"),
    [(logging.DEBUG, "debug"), (logging.INFO, "info"), (logging.WARNING, "warning"), (logging.ERROR, "error")],
)
def test_json_level_is_lower_case(level: int, name: str) -> None:
    assert json.loads(JsonFormatter().format(record(level=level)))["level"] == name


def test_json_includes_extra_fields() -> None:
    extra = {"volume_id": "pvc-1", "pid": 42, "ready": True, "ratio": 0.5, "none": None, "path": Path("/mnt/x")}
    entry = json.loads(JsonFormatter().format(record(extra=extra)))
    assert entry["volume_id"] == "pvc-1"
    assert entry["pid"] == 42
    assert entry["ready"] is True
    assert entry["ratio"] == 0.5
    assert entry["none"] is None
    assert entry["path"] == "/mnt/x"
    assert not {"args", "exc_info", "levelno", "pathname", "lineno", "process", "thread"} & set(entry)


def test_json_message_args_are_interpolated() -> None:
    entry = json.loads(JsonFormatter().format(record("mounted %s at %d", ("pvc-1", 7))))
    assert entry["msg"] == "mounted pvc-1 at 7"


@pytest.mark.parametrize(
    ("msg", "extra"),
    [
        ("line one\nline two", {}),
        ('tab\tand "quotes" and \\ backslash', {"error": "multi\nline\r\nerror"}),
        ("unicode ✓ µs", {"target": "/var/lib/kubelet/pods/x\ny"}),
    ],
)
def test_json_is_one_valid_object_per_line(msg: str, extra: dict[str, str]) -> None:
    line = JsonFormatter().format(record(msg, extra=extra))
    assert "\n" not in line
    assert "\r" not in line
    entry = json.loads(line)
    assert entry["msg"] == msg
    for key, value in extra.items():
        assert entry[key] == value
    assert TS.fullmatch(entry["ts"])


def test_json_includes_the_exception() -> None:
    line = JsonFormatter().format(record(exc=True))
    assert "\n" not in line
    entry = json.loads(line)
    assert "RuntimeError: kaboom" in entry["error"]
    assert "Traceback" in entry["error"]


# --------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------


def test_text_line() -> None:
    line = TextFormatter().format(record())
    assert line == "2023-11-14T22:13:20.123Z INFO    juicefs_csi.node: volume published"


def test_text_includes_key_value_pairs() -> None:
    line = TextFormatter().format(record(extra={"volume_id": "pvc-1", "pid": 42, "target": "/mnt/a b"}))
    assert line.startswith("2023-11-14T22:13:20.123Z INFO    juicefs_csi.node: volume published ")
    assert 'volume_id="pvc-1"' in line
    assert "pid=42" in line
    assert 'target="/mnt/a b"' in line


def test_text_quotes_values_so_pairs_stay_on_one_line() -> None:
    line = TextFormatter().format(record(extra={"error": "a\nb", "path": Path("/x")}))
    assert "\n" not in line
    assert 'error="a\\nb"' in line
    assert 'path="/x"' in line


def test_text_includes_the_exception() -> None:
    text = TextFormatter().format(record(level=logging.ERROR, exc=True))
    first, *rest = text.splitlines()
    assert first.endswith("ERROR   juicefs_csi.node: volume published")
    assert "RuntimeError: kaboom" in "\n".join(rest)


# --------------------------------------------------------------------------
# configure_logging
# --------------------------------------------------------------------------


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield root
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.parametrize(("log_format", "formatter"), [("json", JsonFormatter), ("text", TextFormatter)])
def test_configure_logging(root_logger: logging.Logger, log_format: str, formatter: type[logging.Formatter]) -> None:
    configure_logging(log_format, "debug")
    assert len(root_logger.handlers) == 1
    assert isinstance(root_logger.handlers[0].formatter, formatter)
    assert root_logger.level == logging.DEBUG


def test_configured_json_logging_writes_one_object_per_line(
    root_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging("json", "info")
    log = logging.getLogger("juicefs_csi.test")
    log.info("first", extra={"volume_id": "pvc-1"})
    log.debug("hidden")
    log.warning("second\nline", extra={"code": "NOT_FOUND"})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert (first["msg"], first["volume_id"], first["level"]) == ("first", "pvc-1", "info")
    assert (second["msg"], second["code"], second["level"]) == ("second\nline", "NOT_FOUND", "warning")
