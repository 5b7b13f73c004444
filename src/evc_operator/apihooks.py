"""What the API layer (kube.py) reports as it talks to the API server, and to whom.

Three hooks, each a no-op until the operator sets it at start: every failed call by
operation (`set_error_hook`), every request by verb, resource and status
(`set_request_hook`), and every response's `Date` header with the local times around it
(`set_date_hook`, from which the server's clock is learnt). Kept apart from kube.py so
that the client stays one concern; nothing here talks to the API server.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

ErrorHook = Callable[[str, int], None]  # (operation, HTTP status; 0: no answer)
# (verb, resource, HTTP status; 0: no answer), verbs and resources as Kubernetes names them:
# ("list", "pods", 200), ("patch", "ephemeralvolumeclaims/status", 409).
RequestHook = Callable[[str, str, int], None]
DateHook = Callable[[str | None, float, float], None]  # (Date header, sent, received)


def _ignore(_operation: str, _status: int) -> None:
    pass


def _ignore_request(_verb: str, _resource: str, _status: int) -> None:
    pass


def _no_date(_date: str | None, _sent: float, _received: float) -> None:
    pass


error_hook: ErrorHook = _ignore
request_hook: RequestHook = _ignore_request
date_hook: DateHook = _no_date


def set_error_hook(hook: ErrorHook) -> None:
    """Have every failed call reported to `hook` (metrics count them)."""
    global error_hook
    error_hook = hook


def set_request_hook(hook: RequestHook) -> None:
    """Have every request reported to `hook` once answered, or once it got no answer."""
    global request_hook
    request_hook = hook


def set_date_hook(hook: DateHook) -> None:
    """Have every response's `Date` header reported to `hook`, with the local times (on
    `timestamps.boottime`) the request was sent and its answer began (the server's clock
    is learnt so)."""
    global date_hook
    date_hook = hook


_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


def verb_and_resource(method: str, path: str,
                      params: Mapping[str, str] | None = None) -> tuple[str, str]:
    """A request as the API server's audit names it: its verb and resource (with the
    subresource, e.g. "ephemeralvolumeclaims/status")."""
    parts = [part for part in path.split("?")[0].split("/") if part]
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:]  # after the group and version
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        rest = rest[2:]  # a namespaced resource
    resource = "/".join(rest[0:1] + rest[2:3])
    named = len(rest) > 1
    if method == "GET":
        verb = "get" if named else "watch" if (params or {}).get("watch") == "true" else "list"
    elif method == "DELETE":
        verb = "delete" if named else "deletecollection"
    else:
        verb = _VERBS.get(method, method.lower())
    return verb, resource
