"""Errors of the REST front end: each carries its HTTP status as a class attribute, and
:func:`owdedup.serve.api.RestApi.handle` is the one place that turns them into responses."""

from __future__ import annotations


class ApiError(Exception):
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class EntityNotFound(ApiError):
    status = 404

    def __init__(self, message: str = "The requested resource does not exist.") -> None:
        super().__init__(message)


class MethodNotAllowed(ApiError):
    status = 405


class Conflict(ApiError):
    status = 409


class TooLarge(ApiError):
    status = 413

