"""Label and field selectors with the grammar and errors of k8s.io/apimachinery."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .errors import ApiError, bad_request
from .resources import FieldGetter, Obj

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def qualified_name_problem(key: str) -> str | None:
    """Why ``key`` is not a qualified name (label/annotation key, finalizer), or None."""
    prefix, _, name = key.rpartition("/")
    if "/" in prefix:
        return (
            "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start "
            "and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex "
            "used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS "
            "subdomain prefix and '/' (e.g. 'example.com/MyName')"
        )
    if "/" in key and (not prefix or len(prefix) > 253 or not _PREFIX.match(prefix)):
        return (
            "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
            "characters, '-' or '.', and must start and end with an alphanumeric character"
        )
    if not name:
        return "name part must be non-empty"
    if len(name) > 63:
        return "name part must be no more than 63 characters"
    if not _NAME_PART.match(name):
        return (
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
            "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
            "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        )
    return None


def label_value_problem(value: str) -> str | None:
    if len(value) > 63:
        return "must be no more than 63 characters"
    if not _LABEL_VALUE.match(value):
        return (
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
            "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
            "'my_value',  or '12345', regex used for validation is "
            "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        )
    return None


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key, "")
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        try:
            have, want = int(value), int(next(iter(self.values)))
        except ValueError:
            return False
        return present and (have > want if self.op == "gt" else have < want)


_TOKEN = re.compile(r"\s*(!=|==|=|!|,|\(|\)|>|<|[^\s!=,()<>]+)")


class LabelSelector:
    """A parsed ``labelSelector`` query parameter; the empty selector matches everything."""

    def __init__(self, text: str | None) -> None:
        self.requirements = _parse_labels(text or "")

    def matches(self, obj: Obj) -> bool:
        if not self.requirements:
            return True
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(r.matches(labels) for r in self.requirements)

    def __bool__(self) -> bool:
        return bool(self.requirements)


def _parse_labels(text: str) -> list[Requirement]:
    tokens = [t for t in _TOKEN.findall(text)]
    if "".join(tokens).replace(" ", "") != re.sub(r"\s+", "", text):
        raise bad_request(f"unable to parse requirement: found unexpected character in {text!r}")
    out: list[Requirement] = []
    pos = 0

    def fail(why: str) -> ApiError:
        return bad_request(f"unable to parse requirement: {why}")

    while pos < len(tokens):
        tok = tokens[pos]
        if tok == "!":
            if pos + 1 >= len(tokens):
                raise fail("found '', expected: identifier")
            out.append(Requirement(_check_key(tokens[pos + 1]), "!", frozenset()))
            pos += 2
        else:
            key = _check_key(tok)
            pos += 1
            op = tokens[pos] if pos < len(tokens) else ","
            if op == ",":
                out.append(Requirement(key, "exists", frozenset()))
            elif op in ("=", "==", "!=", ">", "<"):
                value = tokens[pos + 1] if pos + 1 < len(tokens) and tokens[pos + 1] != "," else ""
                pos += 2 if value else 1
                if op in (">", "<") and not value.isdigit():
                    raise fail(f"for 'Gt', 'Lt' operators, the value must be an integer, got {value!r}")
                _check_value(value)
                kind = {"==": "=", ">": "gt", "<": "lt"}.get(op, op)
                out.append(Requirement(key, kind, frozenset([value])))
            elif op in ("in", "notin"):
                pos += 1
                if pos >= len(tokens) or tokens[pos] != "(":
                    raise fail(f"found '{tokens[pos] if pos < len(tokens) else ''}', expected: '('")
                pos += 1
                values: set[str] = set()
                expect_value = True
                while pos < len(tokens) and tokens[pos] != ")":
                    if tokens[pos] == ",":
                        if expect_value:
                            values.add("")
                        expect_value = True
                    else:
                        values.add(_check_value(tokens[pos]))
                        expect_value = False
                    pos += 1
                if pos >= len(tokens):
                    raise fail("found '', expected: ')'")
                pos += 1
                out.append(Requirement(key, op, frozenset(values)))
            else:
                raise fail(f"found '{op}', expected: in, notin, =, ==, !=, gt, lt")
        if pos < len(tokens):
            if tokens[pos] != ",":
                raise fail(f"found '{tokens[pos]}', expected: ',' or 'end of string'")
            pos += 1
            if pos >= len(tokens):
                raise fail("found '', expected: identifier")
    return out


def _check_key(key: str) -> str:
    if key in ("in", "notin", ",", "(", ")", "=", "==", "!="):
        raise bad_request(f"unable to parse requirement: found '{key}', expected: identifier")
    problem = qualified_name_problem(key)
    if problem:
        raise bad_request(f'unable to parse requirement: invalid label key "{key}": {problem}')
    return key


def _check_value(value: str) -> str:
    problem = label_value_problem(value)
    if problem:
        raise bad_request(f'unable to parse requirement: invalid label value: "{value}": {problem}')
    return value


class FieldSelector:
    """A parsed ``fieldSelector``; only the fields a real server indexes for the kind are accepted."""

    def __init__(self, text: str | None, getters: Mapping[str, FieldGetter]) -> None:
        self.terms: list[tuple[FieldGetter, bool, str]] = []
        self.exact: dict[str, str] = {}
        for part in _split_unescaped(text or "", ","):
            if not part:
                continue
            for op in ("!=", "==", "="):
                key, found, value = _partition_unescaped(part, op)
                if found:
                    break
            else:
                raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
            key, value = key.strip(), _unescape(value)
            getter = getters.get(key)
            if getter is None:
                raise bad_request(_unsupported(key, getters))
            equal = op != "!="
            if equal:
                self.exact[key] = value
            self.terms.append((getter, equal, value))

    def matches(self, obj: Obj) -> bool:
        return all((getter(obj) == value) == equal for getter, equal, value in self.terms)

    def __bool__(self) -> bool:
        return bool(self.terms)


def _unsupported(key: str, getters: Mapping[str, FieldGetter]) -> str:
    """The two messages of kube-apiserver: kinds with own field labels, and metadata-only kinds."""
    if set(getters) - {"metadata.name", "metadata.namespace"}:
        return f"field label not supported: {key}"
    return f'"{key}" is not a known field selector: only "metadata.name", "metadata.namespace"'


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, cur, escaped = [], [], False
    for ch in text:
        if escaped:
            cur.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _partition_unescaped(text: str, op: str) -> tuple[str, bool, str]:
    i = 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text.startswith(op, i):
            return text[:i], True, text[i + len(op) :]
        i += 1
    return text, False, ""


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def field_getters(extra: Mapping[str, FieldGetter], namespaced: bool) -> dict[str, FieldGetter]:
    """Selectable fields of a kind: metadata.name, metadata.namespace (namespaced kinds) and ``extra``."""
    getters: dict[str, Callable[[Obj], str]] = {
        "metadata.name": lambda o: str(o.get("metadata", {}).get("name", "")),
    }
    if namespaced:
        getters["metadata.namespace"] = lambda o: str(o.get("metadata", {}).get("namespace", ""))
    getters.update(extra)
    return getters
