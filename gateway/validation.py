"""Request parsing: strict types, clear 400s, nothing coerced silently."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import request
from werkzeug.routing import IntegerConverter, Map

from gateway.errors import bad_request

_MISSING = object()


def json_body() -> dict[str, Any]:
    """The request body as a JSON object (oversize bodies are refused earlier, 413)."""
    raw = request.get_data(cache=True)
    if not raw:
        raise bad_request("request body must be a JSON object", "invalid_json")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise bad_request("request body is not valid JSON", "invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object", "invalid_json")
    if b"\\u" not in raw and b"\xed" not in raw and b"\x00" not in raw:
        # Read as UTF-8 (a UTF-16 or UTF-32 body has NULs), where a surrogate is either
        # a "\u" escape or the bytes ED A0-BF (json.loads lets them pass): with neither,
        # there is none. The common case, unchecked.
        return body
    try:
        # "\ud800" escapes decode to lone surrogates, which no database or UTF-8
        # response can hold: refuse them here rather than fail half-way through a write.
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request("request body contains an unpaired UTF-16 surrogate",
                          "invalid_json") from None
    return body


def _ascii_digits(raw: str) -> bool:
    # str.isdigit() is true for "²" and other digits int() refuses.
    return raw.isascii() and raw.isdigit()


def _get(body: dict[str, Any], name: str, required: bool) -> Any:
    value = body.get(name, _MISSING)
    if value is _MISSING or value is None:
        if required:
            raise bad_request(f"'{name}' is required", "missing_field", field=name)
        return _MISSING
    return value


def string(body: dict[str, Any], name: str, *, required: bool = True, min_len: int = 0,
           max_len: int = 1000, pattern: str | None = None, strip: bool = False,
           default: str | None = None) -> str | None:
    value = _get(body, name, required)
    if value is _MISSING:
        return default
    if not isinstance(value, str):
        raise bad_request(f"'{name}' must be a string", "invalid_field", field=name)
    if "\x00" in value:  # PostgreSQL text cannot hold NUL
        raise bad_request(f"'{name}' must not contain NUL characters", "invalid_field",
                          field=name)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (WebSocket frames skip json_body)
        raise bad_request(f"'{name}' is not valid Unicode", "invalid_field",
                          field=name) from None
    if strip:
        value = value.strip()
    if len(value) < min_len:
        what = "must not be empty" if min_len == 1 else f"needs at least {min_len} characters"
        raise bad_request(f"'{name}' {what}", "invalid_field", field=name)
    if len(value) > max_len:
        raise bad_request(f"'{name}' is longer than {max_len} characters",
                          "too_long", field=name, max_length=max_len)
    if pattern and not re.fullmatch(pattern, value):
        raise bad_request(f"'{name}' has an invalid format", "invalid_field", field=name)
    return value


def integer(body: dict[str, Any], name: str, *, required: bool = True,
            minimum: int | None = 1, maximum: int | None = 2**63 - 1,
            default: int | None = None) -> int | None:
    value = _get(body, name, required)
    if value is _MISSING:
        return default
    # bool is an int in Python; JSON true is not a number.
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"'{name}' must be an integer", "invalid_field", field=name)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise bad_request(f"'{name}' is out of range", "invalid_field", field=name)
    return value


def boolean(body: dict[str, Any], name: str, *, required: bool = True,
            default: bool | None = None) -> bool | None:
    value = _get(body, name, required)
    if value is _MISSING:
        return default
    if not isinstance(value, bool):
        raise bad_request(f"'{name}' must be true or false", "invalid_field", field=name)
    return value


def id_list(body: dict[str, Any], name: str, *, required: bool = True,
            max_items: int = 1000) -> list[int]:
    value = _get(body, name, required)
    if value is _MISSING:
        return []
    if not isinstance(value, list) or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
        raise bad_request(f"'{name}' must be a list of ids", "invalid_field", field=name)
    if len(value) > max_items:
        raise bad_request(f"'{name}' has more than {max_items} items", "too_many_items",
                          field=name)
    return list(dict.fromkeys(value))


def query_int(name: str, *, default: int | None = None, minimum: int = 0,
              maximum: int = 2**63 - 1) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not _ascii_digits(raw) or len(raw) > 19:
        raise bad_request(f"query parameter '{name}' must be a non-negative integer",
                          "invalid_parameter", parameter=name)
    value = int(raw)
    if value < minimum or value > maximum:
        raise bad_request(f"query parameter '{name}' is out of range ({minimum}..{maximum})",
                          "invalid_parameter", parameter=name)
    return value


def query_float(name: str, *, default: float, minimum: float, maximum: float) -> float:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise bad_request(f"query parameter '{name}' must be a number",
                          "invalid_parameter", parameter=name) from None
    if not minimum <= value <= maximum:  # also rejects NaN
        raise bad_request(f"query parameter '{name}' must be between {minimum} and {maximum}",
                          "invalid_parameter", parameter=name)
    return value


def query_pattern(name: str, pattern: str, description: str) -> str | None:
    """An optional query parameter that must match ``pattern`` whole."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if not re.fullmatch(pattern, raw):
        raise bad_request(f"query parameter '{name}' must be {description}",
                          "invalid_parameter", parameter=name)
    return raw


def path_message_id(raw: str | None, name: str) -> int | None:
    if raw is None or raw == "":
        return None
    if not _ascii_digits(raw) or len(raw) > 19 or int(raw) >= 2**63:
        raise bad_request(f"'{name}' must be a message id", "invalid_parameter", parameter=name)
    return int(raw)


class IdConverter(IntegerConverter):
    """``<int:...>`` in routes: ids beyond 63 bits are unknown (404), never a database
    overflow (SQLite raises OverflowError binding them)."""

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:  # noqa: A002
        kwargs.setdefault("max", 2**63 - 1)
        super().__init__(map, *args, **kwargs)
