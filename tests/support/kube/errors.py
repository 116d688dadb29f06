"""API errors and the ``Status`` bodies a real kube-apiserver sends for them.

The messages, reasons and ``details`` follow k8s.io/apimachinery/pkg/api/errors
so that client code parsing them behaves as against a real server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .resources import Obj, ResourceType

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def status_body(code: int, message: str, reason: str | None = None, details: Obj | None = None) -> Obj:
    """A failure ``Status`` object as serialized by the API server."""
    body: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message}
    reason = reason if reason is not None else REASONS.get(code, "")
    if reason:
        body["reason"] = reason
    if details:
        body["details"] = details
    body["code"] = code
    return body


class ApiError(Exception):
    """An error answered as an HTTP status with a ``Status`` body."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        details: Obj | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.body = status_body(code, message, reason, details)
        self.headers = headers or {}

    def encode(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode()


def _details(rt: ResourceType, name: str, **extra: Any) -> Obj:
    details: Obj = {"name": name}
    if rt.group:
        details["group"] = rt.group
    details["kind"] = rt.plural
    details.update(extra)
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, f'{rt.qualified} "{name}" not found', details=_details(rt, name))


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(409, f'{rt.qualified} "{name}" already exists', "AlreadyExists", _details(rt, name))


def conflict(rt: ResourceType, name: str, why: str) -> ApiError:
    return ApiError(
        409, f'Operation cannot be fulfilled on {rt.qualified} "{name}": {why}', "Conflict", _details(rt, name)
    )


STALE = "the object has been modified; please apply your changes to the latest version and try again"


def forbidden(rt: ResourceType, name: str, why: str, causes: list[Obj] | None = None) -> ApiError:
    subject = f'{rt.qualified} "{name}"' if name else rt.qualified
    extra = {"causes": causes} if causes else {}
    return ApiError(403, f"{subject} is forbidden: {why}", details=_details(rt, name, **extra))


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def expired(message: str) -> ApiError:
    return ApiError(410, message)


def too_large_rv(requested: int, current: int) -> ApiError:
    return ApiError(
        504,
        f"Too large resource version: {requested}, current: {current}",
        "Timeout",
        {
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1,
        },
    )


def path_not_found() -> ApiError:
    return ApiError(404, "the server could not find the requested resource", details={})


@dataclass(frozen=True)
class FieldError:
    """One validation failure, rendered like field.Error in apimachinery."""

    type: str
    field: str
    detail: str = ""
    value: Any = None

    _TYPES = {
        "Invalid": ("FieldValueInvalid", "Invalid value"),
        "Required": ("FieldValueRequired", "Required value"),
        "Forbidden": ("FieldValueForbidden", "Forbidden"),
        "NotSupported": ("FieldValueNotSupported", "Unsupported value"),
        "Duplicate": ("FieldValueDuplicate", "Duplicate value"),
        "TooLong": ("FieldValueTooLong", "Too long"),
    }

    def body(self) -> str:
        text = self._TYPES[self.type][1]
        if self.type in ("Invalid", "NotSupported", "Duplicate"):
            text += ": " + json.dumps(self.value) if not isinstance(self.value, dict) else ": {...}"
        if self.detail:
            text += ": " + self.detail
        return text

    def cause(self) -> Obj:
        return {"reason": self._TYPES[self.type][0], "message": self.body(), "field": self.field}


def invalid(rt: ResourceType, name: str, errors: list[FieldError]) -> ApiError:
    """422 Invalid; ``details.kind`` is the Kind here (NewInvalid takes a GroupKind)."""
    qualified_kind = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
    texts = [f"{e.field}: {e.body()}" for e in errors]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    details: Obj = {"name": name}
    if rt.group:
        details["group"] = rt.group
    details["kind"] = rt.kind
    details["causes"] = [e.cause() for e in errors]
    return ApiError(422, f'{qualified_kind} "{name}" is invalid: {joined}', "Invalid", details)
