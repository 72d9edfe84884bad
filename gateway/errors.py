"""JSON errors: every failure is ``{"error": {"code", "message"}}`` with a 4xx/5xx status."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from werkzeug.exceptions import HTTPException

from storage.state_memory import LockTimeout

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"error": error}


def bad_request(message: str, code: str = "invalid_request", **details: Any) -> ApiError:
    return ApiError(400, code, message, **details)


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


def unauthorized(message: str = "missing or invalid credentials") -> ApiError:
    return ApiError(401, "unauthorized", message)


def conflict(message: str, code: str = "conflict") -> ApiError:
    return ApiError(409, code, message)


def too_many(message: str = "rate limit exceeded") -> ApiError:
    return ApiError(429, "rate_limited", message)


def unavailable(message: str) -> ApiError:
    return ApiError(503, "unavailable", message)


# The scaled engine's store is unreachable (restart, failover, network): the request did
# not happen, and the same request (same client_msg_id) succeeds once it is back.
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError)
# Seconds a client should wait before retrying a 503: Redis restarts in about that long.
_RETRY_AFTER = "1"

_HTTP_CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden",
               404: "not_found", 405: "method_not_allowed", 413: "body_too_large",
               415: "unsupported_media_type", 429: "rate_limited"}


def init_app(app: Flask) -> None:
    from gateway.validation import IdConverter

    # Before any blueprint adds its rules: every <int:...> id in a path is bounded.
    app.url_map.converters["int"] = IdConverter

    @app.errorhandler(ApiError)
    def _api_error(err: ApiError):  # type: ignore[no-untyped-def]
        response = jsonify(err.body())
        response.status_code = err.status
        if err.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="switchboard"'
        if err.status == 503:
            response.headers["Retry-After"] = _RETRY_AFTER
        return response

    @app.errorhandler(RedisConnectionError)
    @app.errorhandler(RedisTimeoutError)
    def _store_unavailable(err: Exception):  # type: ignore[no-untyped-def]
        log.warning("store unavailable: %s", err)
        return _api_error(unavailable("the message store is unavailable; retry shortly"))

    @app.errorhandler(LockTimeout)
    def _busy(err: LockTimeout):  # type: ignore[no-untyped-def]
        # A conversation's send lock stayed taken (a holder that lost Redis mid-send
        # leaves it until its TTL): retrying with the same client_msg_id is safe.
        log.warning("lock timeout: %s", err)
        return _api_error(unavailable("the conversation is busy; retry shortly"))

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException):  # type: ignore[no-untyped-def]
        status = err.code or 500
        code = _HTTP_CODES.get(status, "http_error")
        response = jsonify({"error": {"code": code, "message": err.description}})
        response.status_code = status
        return response

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):  # type: ignore[no-untyped-def]
        log.exception("unhandled error")
        response = jsonify({"error": {"code": "internal", "message": "internal error"}})
        response.status_code = 500
        return response
