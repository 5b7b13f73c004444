"""What the API server's refusals mean, as types: callers catch `NotFound` or `Conflict`
instead of comparing status numbers. Raised by `kube`; no other dependency.
"""

from __future__ import annotations

import json
from collections.abc import Mapping


class ApiException(Exception):
    """The API server answered with a status outside 2xx (or a watch with an ERROR)."""

    def __init__(self, status: int | None = None, reason: str | None = None, *,
                 body: bytes | str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.body = body
        self.headers = headers

    def __str__(self) -> str:
        return f"({self.status}) {error_message(self)}"


class _Known(ApiException):
    """An answer whose status says what went wrong; raised as its own type."""

    STATUS = 0

    def __init_subclass__(cls, status: int) -> None:
        cls.STATUS = status
        _BY_STATUS[status] = cls

    def __init__(self, reason: str | None = None, *, body: bytes | str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(self.STATUS, reason, body=body, headers=headers)


_BY_STATUS: dict[int, type[_Known]] = {}


class Unauthorized(_Known, status=401):
    """401: the credentials were not accepted."""


class Forbidden(_Known, status=403):
    """403: the RBAC (or an admission rule) does not allow it."""


class NotFound(_Known, status=404):
    """404: there is no such object."""


class Conflict(_Known, status=409):
    """409: it exists already, or a precondition (uid, resourceVersion) no longer holds."""


class Gone(_Known, status=410):
    """410: the resourceVersion to resume a watch from is too old; list again."""


class Invalid(_Known, status=422):
    """422: the object or change is refused as invalid (e.g. a PVC that cannot grow)."""


class Unreadable(Exception):
    """A 2xx answer whose body is not the JSON object it should be (a proxy in the way, a
    body cut short): no word about the request that can be read. It may or may not have
    been done; worth the same call again later, as one not answered (`kube.UNANSWERED`)."""


def api_error(status: int, reason: str | None, body: bytes | str | None = None,
              headers: Mapping[str, str] | None = None) -> ApiException:
    """The typed error for an answer's status (a plain ApiException for the others)."""
    known = _BY_STATUS.get(status)
    if known is not None:
        return known(reason, body=body, headers=headers)
    return ApiException(status, reason, body=body, headers=headers)


def transient(error: BaseException) -> bool:
    """Whether a failed call says nothing about the request itself: the API server is
    throttling (429), failing or unavailable (5xx), or did not answer in time. Worth the
    same request again later; never a refusal to report."""
    if isinstance(error, ApiException):
        return error.status == 429 or (error.status or 0) >= 500
    return isinstance(error, TimeoutError)


def error_message(error: ApiException) -> str:
    """The API server's own explanation from an error response, else its reason."""
    try:
        message = json.loads(error.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or error.reason)


def refusal(error: ApiException) -> str:
    """The API server's reason and message, as a person reads them (`Forbidden: exceeded
    quota: ...`), without a final full stop."""
    try:
        reason = json.loads(error.body or "{}").get("reason")
    except (ValueError, AttributeError):
        reason = None
    return f"{reason or error.reason or error.status}: {error_message(error).rstrip('.')}"


def describe(error: BaseException) -> str:
    """One line about a failed call, for logs."""
    if isinstance(error, ApiException):
        return f"API error {error.status}: {error_message(error)}"
    return f"{type(error).__name__}: {error}"
