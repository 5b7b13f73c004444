"""Operator settings from the environment, validated once at start.

A bad value stops the operator with a message naming the variable, the value
and what would be accepted: a typo must never silently become a default.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
from collections.abc import Mapping

from evc_operator import customkinds
from evc_operator.workloads import UserKind

_DURATION = re.compile(r"(?P<value>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# Longer periods are surely mistakes, and would overflow date arithmetic.
MAX_DURATION = 100 * 365 * 86400.0
DURATION_HELP = "seconds (e.g. 30) or a duration such as 90s, 15m, 1h30m"


class SettingsError(ValueError):
    """An environment variable holds a value the operator cannot use."""


def parse_duration(text: str, maximum: float = MAX_DURATION) -> float:
    """Seconds from '30', '2.5', '90s', '15m', '1h30m', '1d', at most `maximum`.
    Raises ValueError."""
    text = text.strip()
    if not text:
        raise ValueError("empty duration")
    try:
        seconds = float(text)
    except ValueError:
        position, seconds = 0, 0.0
        for match in _DURATION.finditer(text):
            if match.start() != position:
                break
            seconds += float(match["value"]) * _UNIT_SECONDS[match["unit"]]
            position = match.end()
        if position != len(text) or position == 0:
            raise ValueError(f"not a duration: {text!r}") from None
    if not 0 <= seconds <= maximum:  # also rejects NaN
        raise ValueError(f"not a duration between 0 and 100 years: {text!r}")
    return seconds


@dataclasses.dataclass(frozen=True)
class Settings:
    expiry_period: float = 30.0
    grace_period: float = 30.0
    countdown_interval: float = 10.0
    dry_run: bool = False  # report what would be deleted; delete nothing
    lifecycle_events: bool = True  # Normal Events for transitions (Warnings always)
    metrics_port: int = 9090  # /metrics and /readyz; 0 turns them off
    # Loopback: `make run` on a laptop serves nobody else. The image sets 0.0.0.0 (in a
    # pod, Prometheus and the kubelet reach it from outside).
    metrics_address: str = "127.0.0.1"
    per_claim_metrics: bool = False  # series per claim (namespace, name): unbounded
    # Serving every namespace, watch each workload kind once for the cluster where the RBAC
    # allows it (clusterwide.py); false: per namespace with claims, as a namespaced install.
    cluster_workload_watches: bool = True
    leader_election: bool = False  # several replicas: only the Lease holder acts
    lease_name: str = "evc-operator"
    lease_namespace: str = ""
    lease_duration: float = 10.0
    identity: str = dataclasses.field(default="", compare=False)  # this process, not config
    # Admin guardrails: no claim's own spec.expiryPeriod or spec.gracePeriod counts as
    # shorter than MIN_PERIOD or longer than MAX_PERIOD (evc.py says so in its status).
    min_period: float = 0.0
    max_period: float = MAX_DURATION
    # The key that seals the facts a deadline rests on (seal.py, signingkey.py): a Secret
    # in SIGNING_KEY_NAMESPACE (default: POD_NAMESPACE, the operator's own) when that is
    # known, else a file of the user who runs the operator. Loaded at start.
    signing_key_secret: str = "evc-operator-signing-key"
    signing_key_namespace: str = ""
    signing_key_file: str = ""
    signing_key: bytes = dataclasses.field(default=b"", compare=False, repr=False)
    # Custom resources whose objects are users of the claims they name (customkinds.py):
    # USER_KINDS, comma-separated plural.version.group.
    user_kinds: tuple[UserKind, ...] = ()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        defaults = cls()
        settings = cls(
            expiry_period=_duration(environ, "EXPIRY_PERIOD", defaults.expiry_period),
            grace_period=_duration(environ, "GRACE_PERIOD", defaults.grace_period),
            countdown_interval=_duration(environ, "COUNTDOWN_INTERVAL",
                                         defaults.countdown_interval, positive=True),
            dry_run=_flag(environ, "DRY_RUN"),
            lifecycle_events=_flag(environ, "LIFECYCLE_EVENTS", default=True),
            metrics_port=_port(environ, "METRICS_PORT", defaults.metrics_port),
            metrics_address=_address(environ, "METRICS_ADDRESS", defaults.metrics_address),
            per_claim_metrics=_flag(environ, "PER_CLAIM_METRICS"),
            cluster_workload_watches=_flag(environ, "CLUSTER_WORKLOAD_WATCHES", default=True),
            leader_election=_flag(environ, "LEADER_ELECTION"),
            lease_name=environ.get("LEASE_NAME", "").strip() or defaults.lease_name,
            lease_namespace=(environ.get("LEASE_NAMESPACE", "").strip()
                             or environ.get("POD_NAMESPACE", "").strip()),
            lease_duration=_duration(environ, "LEASE_DURATION", defaults.lease_duration,
                                     positive=True),
            identity=(environ.get("POD_NAME", "").strip()
                      or f"{socket.gethostname()}-{os.getpid()}"),
            min_period=_duration(environ, "MIN_PERIOD", defaults.min_period),
            max_period=_duration(environ, "MAX_PERIOD", defaults.max_period),
            signing_key_secret=(environ.get("SIGNING_KEY_SECRET", "").strip()
                                or defaults.signing_key_secret),
            signing_key_namespace=(environ.get("SIGNING_KEY_NAMESPACE", "").strip()
                                   or environ.get("POD_NAMESPACE", "").strip()),
            signing_key_file=environ.get("SIGNING_KEY_FILE", "").strip(),
            user_kinds=_user_kinds(environ),
        )
        _check_limits(settings)
        if settings.leader_election and not settings.lease_namespace:
            raise SettingsError("LEADER_ELECTION=true needs LEASE_NAMESPACE (or POD_NAMESPACE): "
                                "the namespace of the Lease that elects the active replica")
        return settings


def _user_kinds(environ: Mapping[str, str]) -> tuple[UserKind, ...]:
    try:
        return customkinds.parse(environ.get("USER_KINDS", ""))
    except customkinds.BadUserKind as error:
        raise SettingsError(f"USER_KINDS: {error}") from None


def _check_limits(settings: Settings) -> None:
    """The floor is below the ceiling, and the default periods lie between them."""
    if settings.min_period > settings.max_period:
        raise SettingsError(f"MIN_PERIOD ({settings.min_period:g} s) is longer than "
                            f"MAX_PERIOD ({settings.max_period:g} s)")
    for name, value in (("EXPIRY_PERIOD", settings.expiry_period),
                        ("GRACE_PERIOD", settings.grace_period)):
        if not settings.min_period <= value <= settings.max_period:
            raise SettingsError(f"{name} ({value:g} s) is outside MIN_PERIOD "
                                f"({settings.min_period:g} s) .. MAX_PERIOD "
                                f"({settings.max_period:g} s)")


def _duration(environ: Mapping[str, str], name: str, default: float,
              *, positive: bool = False) -> float:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = parse_duration(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is invalid: use {DURATION_HELP}") from None
    if positive and value <= 0:
        raise SettingsError(f"{name}={raw!r} is invalid: it must be greater than zero")
    return value


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def _flag(environ: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = environ.get(name, "")
    if not raw.strip():
        return default
    if raw.strip().lower() in _TRUE:
        return True
    if raw.strip().lower() in _FALSE:
        return False
    raise SettingsError(f"{name}={raw!r} is invalid: use true or false")


def _port(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) > 65535:
        raise SettingsError(f"{name}={raw!r} is invalid: use a port number, or 0 for none")
    return int(raw)


def _address(environ: Mapping[str, str], name: str, default: str) -> str:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return str(ipaddress.ip_address(raw.strip("[]")))
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is invalid: use an IP address to listen on, "
                            f"such as 127.0.0.1 (this machine only) or 0.0.0.0 (all "
                            f"interfaces)") from None
