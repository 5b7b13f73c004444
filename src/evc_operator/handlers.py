"""Kopf handlers: thin. They pass EVC events on and start the scheduler and informers.

No handler here writes Kopf's own bookkeeping to objects: EVCs are handled
level-based with `on.event` (no diff-base or progress annotations, no
finalizer), and their events go from Kopf's watch stream straight to
`claim_event` (kopffeed.py). Pods and PVCs are not Kopf's: the operator's own informers
(`informer.py`) watch them in the namespaces that hold claims, and never patch
them. All decisions are made by the per-claim reconcile, through the pure modules.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import logging
import os
import socket
import sys
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

import kopf

from evc_operator import (
    access,
    apihooks,
    collector,
    customkinds,
    essential,
    kopffeed,
    kopfmemory,
    kube,
    memory,
    metrics,
    openfiles,
    served,
    signingkey,
)
from evc_operator.credentials import ConfigError, kopf_login
from evc_operator.errors import describe
from evc_operator.informer import KubeSource
from evc_operator.leadership import Leadership, LeaseSettings
from evc_operator.proof import Prover
from evc_operator.resources import API_VERSION, CRD, CRD_NAME, EVC, GROUP, PLURAL
from evc_operator.scheduler import Scheduler
from evc_operator.seams import KubeClaimApi
from evc_operator.servertime import ServerClock, SkewWatch
from evc_operator.settings import Settings, SettingsError
from evc_operator.watched import Watched
from evc_operator.workloads import BUILT_IN

log = logging.getLogger(__name__)


def _settings_or_exit() -> Settings:
    """Read the environment once, when the operator loads: a bad value stops it right
    there, with one line that names the variable, not a traceback."""
    try:
        return Settings.from_environ()
    except SettingsError as error:
        sys.exit(f"evc-operator: invalid configuration: {error}")


CONFIG = _settings_or_exit()
LIST_CHUNK = 500  # objects per page of Kopf's initial lists, where not streamed
WORKER_IDLE_SECONDS = 0.5  # how long Kopf keeps an object's worker after its last event


class _RoutineSuccessToDebug(logging.Filter):
    """Kopf logs every handled pod event as "Handler ... succeeded." at INFO: with
    thousands of pods that drowns what matters, so it becomes DEBUG (shown with --verbose)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and str(record.msg).endswith(" succeeded."):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


class _RetryUntilItAnswers:
    """Delays between Kopf's attempts at one API request (discovery, list, watch).

    Kopf's default gives up after 9 attempts (about 54 s) and exits with a traceback: an
    API server that is down at start, or a permission missing from the RBAC, would make a
    crash loop. Instead every request is retried until it succeeds, the delay growing to
    10 s; Kopf logs each failed attempt with its URL and error. Not Sized (Kopf would count
    attempts), and iterated anew for each request.
    """

    RAMP = (1.0, 1.0, 2.0, 3.0, 5.0, 8.0)
    CAP = 10.0

    def __iter__(self) -> Iterator[float]:
        return itertools.chain(self.RAMP, itertools.repeat(self.CAP))


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger,
                **kwargs: Any) -> None:
    config = CONFIG
    _no_kopf_peering(settings, logger)
    memory.map_large_blocks()  # before the first connection: see memory.py
    memory.small_tls_buffers()
    openfiles.raise_soft_limit()  # a connection per watch: several a namespace
    logging.getLogger("kopf.objects").addFilter(_RoutineSuccessToDebug())
    quiet = access.QuietForbidden()  # Kopf logs through loggers it is given: on handlers
    for handler in logging.getLogger().handlers:
        handler.addFilter(quiet)
    # Decided once: Kopf's state, if it ever needs any, lives in annotations, never status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage()
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage()
    settings.posting.loggers = False  # log lines never become Events; Events are explicit
    settings.networking.error_backoffs = _RetryUntilItAnswers()  # wait, never crash-loop
    # Kopf's initial list is one unpaged request by default: with tens of thousands of
    # claims, one huge response held in memory at once on both sides.
    settings.watching.chunk_size = LIST_CHUNK
    # Kopf keeps a worker per object for IDLE_TIMEOUT after its last event (5 s by default):
    # 10,000 claims provisioned in a burst are 10,000 workers alive at once, and memory
    # freed afterwards stays fragmented. Measured at 10,000 claims: 290 MiB at 5 s, 188 MiB
    # at 0.5 s (docs/benchmarks.md).
    settings.queueing.idle_timeout = WORKER_IDLE_SECONDS
    kopfmemory.install(kopf.get_default_registry())  # nothing kept per claim: see there
    kopffeed.install(GROUP, PLURAL, functools.partial(claim_event, memo),  # see there
                     functools.partial(_serving, memo), functools.partial(claims_listed, memo))
    apihooks.set_error_hook(metrics.count_api_error)
    apihooks.set_request_hook(metrics.count_api_request)
    metrics.initialise(kube.OPERATIONS)
    collector.install(metrics.GC_PAUSES)  # young objects die young: see there
    listening = _metrics_socket_or_exit(config, logger)
    # Deadlines are compared with the API server's clock, learnt from its responses.
    memo.clock = clock = ServerClock()
    skew = SkewWatch(clock, metrics.CLOCK_SKEW.set)

    def on_date(date: str | None, sent: float, received: float) -> None:
        clock.observe_header(date, sent, received)
        skew.check()

    apihooks.set_date_hook(on_date)
    memo.api = await _connect_or_exit(logger)
    memo.claims_watch = served.ClaimsWatch(  # before Kopf logs in: it traces Kopf's requests
        functools.partial(kube.serves, memo.api, API_VERSION, PLURAL))
    settings.watching.initial_streaming = await served.streams_lists_here(memo.api, logger)
    memo.access = access.AccessCheck(memo.api)
    memo.access.check(access.DISCOVERY)
    config = await _with_signing_key(memo.api, config, logger)
    # Pods and PVCs are not Kopf's: see informer.py for why.
    if config.user_kinds:
        logger.info("Objects of %s are users of the claims they name (USER_KINDS).",
                    customkinds.names(config.user_kinds))
    memo.watched = watched = Watched(KubeSource(memo.api),
                                     pods_changed=_forward("poke_for_pod", memo),
                                     pvc_changed=_forward("poke", memo),
                                     namespace_synced=_forward("namespace_synced", memo),
                                     kinds=(*BUILT_IN, *config.user_kinds))
    memo.prover = prover = Prover(watched)
    memo.scheduler = scheduler = Scheduler(
        KubeClaimApi(memo.api), config, settings, watched, prover, clock=clock.now,
        latest=clock.latest,
        ahead=prover.anticipate)
    memo.tasks = [essential.start(scheduler.run(), "evc-scheduler"),
                  essential.start(scheduler.log_countdowns(), "evc-countdowns")]
    if config.user_kinds:
        memo.tasks.append(asyncio.create_task(access.check_served(memo.api, config.user_kinds),
                                              name="evc-user-kinds"))
    if config.leader_election:
        scheduler.set_active(False)
        memo.access.check(access.lease(config.lease_name), config.lease_namespace)
        memo.leadership = Leadership(memo.api, LeaseSettings(
            name=config.lease_name, namespace=config.lease_namespace,
            identity=config.identity, duration=config.lease_duration,
            retry=max(0.5, config.lease_duration / 5)), scheduler.set_active)
        scheduler.leading = memo.leadership.leading  # asked before every write (gate.py)
        memo.tasks.append(essential.start(memo.leadership.run(), "evc-leadership"))
    if listening is not None:
        memo.metrics = await metrics.serve(scheduler, listening,
                                           per_claim=config.per_claim_metrics)
        where = _url_host(config.metrics_address, config.metrics_port)
        logger.info("Metrics on http://%s/metrics, readiness on http://%s/readyz%s.",
                    where, where, ", series per claim" if config.per_claim_metrics else "")
    logger.info("Expiry period %ss, grace period %ss, countdown interval %ss%s.",
                config.expiry_period, config.grace_period, config.countdown_interval,
                ", DRY RUN: nothing will be deleted" if config.dry_run else "")


def _no_kopf_peering(settings: kopf.OperatorSettings, logger: kopf.Logger) -> None:
    """Kopf's peering off, always: replicas elect the active one with the operator's own
    Lease (leadership.py). Left to detect it, Kopf turns peering on wherever the
    KopfPeering or ClusterKopfPeering CRD exists (another Kopf-based operator installs
    them), and then patches and watches a `default` peering object the RBAC does not
    grant: one Forbidden error after another, for ever (and, were it granted, a pause
    whenever that other operator runs). Kopf reads this setting only once the start-up
    handlers are done (its orchestrator waits for them), so here is early enough, and
    `kopf run` needs no `--standalone`."""
    if settings.peering.mandatory:
        logger.warning("Kopf's peering (--peering) is not used: replicas elect the active "
                       "one with a Lease (LEADER_ELECTION).")
    settings.peering.standalone = True
    settings.peering.mandatory = False


async def _with_signing_key(api: kube.Api, config: Settings,
                            logger: kopf.Logger) -> Settings:
    """The settings with the key that seals claims' status; none to be had stops the
    operator with one line (it would believe no record, and could resume no countdown)."""
    try:
        key, source = await signingkey.load(api, config)
    except (ConfigError, OSError) as error:
        _exit(logger, f"No key to seal claims' status with: {error}")
    logger.info("Claims' status is sealed with the key in the %s.", source)
    return dataclasses.replace(config, signing_key=key)


def _url_host(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _metrics_socket_or_exit(config: Settings, logger: kopf.Logger) -> socket.socket | None:
    """The metrics port, taken before anything else starts: if another process holds it
    (a second operator on one machine), one line and exit 2, not a traceback per retry."""
    if not config.metrics_port:
        return None
    try:
        return metrics.listen(config.metrics_address, config.metrics_port)
    except OSError as error:
        why = os.strerror(error.errno) if error.errno else str(error)
        _exit(logger, f"cannot serve metrics on "
                      f"{_url_host(config.metrics_address, config.metrics_port)}: {why}. "
                      f"Is another operator running here? Set METRICS_PORT to a free port, "
                      f"or 0 for no metrics.")


async def _connect_or_exit(logger: kopf.Logger) -> kube.Api:
    """Credentials that cannot be used stop the operator here, at start, with one line
    that names the kubeconfig's context and user and what is wrong: never a fall-back
    to anonymous and an endless stream of 403s."""
    try:
        api = await kube.connect()
    except ConfigError as error:
        _exit(logger, error)
    try:
        await api.credentials.check()
    except ConfigError as error:
        await api.close()
        _exit(logger, error)
    return api


def _exit(logger: kopf.Logger, error: ConfigError | str) -> NoReturn:
    """One line that says what is wrong in the operator's environment, and exit 2."""
    logger.error("%s", error)
    logging.shutdown()
    os._exit(2)  # Kopf would retry a failed start-up handler, or print a traceback


@kopf.on.login(backoff=5)  # a plugin that fails later: try again soon, and say why
async def login(memo: kopf.Memo, **_: Any) -> kopf.AiohttpSession:
    """Kopf's own connection uses the operator's credentials (credentials.py), not Kopf's
    kubeconfig reader: exec plugins and token files work, and in a Pod the API server is
    found without DNS."""
    memo.kopf_login = await kopf_login(memo.api.credentials, memo.get("kopf_login"),
                                       memo.claims_watch.trace())
    info: kopf.AiohttpSession = memo.kopf_login[0]
    return info


def _forward(method: str, memo: kopf.Memo) -> Any:
    """A callback to the scheduler's `method`, which exists only after the watcher."""
    return lambda *args: getattr(memo.scheduler, method)(*args)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    kopffeed.uninstall()
    kopfmemory.uninstall()
    collector.uninstall()
    if memo.get("scheduler") is not None:
        await memo.scheduler.flush_events()
    for task in memo.get("tasks", []):
        task.cancel()
    await asyncio.gather(*memo.get("tasks", []), return_exceptions=True)
    if memo.get("claims_watch") is not None:
        await memo.claims_watch.close()
    if memo.get("access") is not None:
        memo.access.close()
    if memo.get("prover") is not None:
        await memo.prover.close()
    if memo.get("watched") is not None:
        await memo.watched.close()
    if memo.get("metrics") is not None:
        await memo.metrics.cleanup()
    api = memo.get("api")
    if api is not None:
        await api.close()


def _scheduler(memo: kopf.Memo) -> Scheduler:
    scheduler: Scheduler = memo.scheduler
    scheduler.pods_view_complete = True  # Kopf is watching: the rest is per namespace
    return scheduler


@kopf.on.event(*CRD, field="metadata.name", value=CRD_NAME)
async def crd_event(type: str, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger,
                    **_: Any) -> None:
    """The EVC CRD's first event tells that Kopf watches, even when there is no claim yet
    (readiness). Deleted under a running operator, it takes every claim with it, and
    Kopf's watch of the claims would end the operator with a traceback (404) moments
    later: stop first, with one line. Started again, the operator waits for the CRD.
    Applied after the start, it is expected to be watched soon (served.py)."""
    _scheduler(memo)
    if type == "DELETED" or body.metadata.get("deletionTimestamp"):
        _exit(logger, f"The CustomResourceDefinition {CRD_NAME} is being deleted, and every "
                      f"EphemeralVolumeClaim with it: stopping. Apply crd.yaml again and "
                      f"start the operator (a Deployment restarts it; it waits for the CRD).")
    memo.claims_watch.crd_seen(type, body, logger)


@kopf.on.event(*EVC)
async def evc_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Kopf's way in for claims' events, where the direct one is not installed
    (kopffeed.py): it registers the claims' watch with Kopf all the same."""
    claim_event(memo, type, body)


async def _serving(memo: kopf.Memo, namespace: str | None) -> None:
    """Told before the claims' stream begins which namespace it serves (None: every one).
    Serving every namespace, and allowed to list and watch the workloads cluster-wide,
    the operator watches each workload kind once for the cluster (clusterwide.py)."""
    if namespace is not None:
        memo.access.check(access.NAMESPACES)  # Kopf lists them: see access.NAMESPACES
    if namespace is not None or memo.watched.shared:
        return
    if not CONFIG.cluster_workload_watches:
        log.info("Workloads are watched per namespace: CLUSTER_WORKLOAD_WATCHES=false.")
        return
    try:
        lacking = await memo.access.lacking_cluster_wide(access.workloads(CONFIG.user_kinds))
    except Exception as error:  # the API server is down, say: per namespace, as before
        log.info("Workloads are watched per namespace: could not check for cluster-wide "
                 "access (%s).", describe(error))
        return
    if lacking:
        log.info("Workloads are watched per namespace: not allowed cluster-wide (%s).",
                 ", ".join(map(str, lacking)))
        return
    memo.watched.share_workloads()
    log.info("Workloads are watched once for the cluster: all namespaces are served.")


async def claims_listed(memo: kopf.Memo, namespace: str | None,
                        listed: set[tuple[str, str]]) -> None:
    """The claims were listed (kopffeed.py): those tracked in that scope that the list
    lacks are read, and forgotten if gone (`kopffeed.missing`)."""
    scheduler = _scheduler(memo)
    tracked = {record.view.key: record.view.uid for record in scheduler.claims.records()}
    await kopffeed.missing(namespace, listed, tracked, scheduler.reconciler.api.read_evc,
                           functools.partial(claim_event, memo),
                           lambda key, uid: (held := scheduler.claims.get(key)) is not None
                           and held.view.uid == uid)


def claim_event(memo: kopf.Memo, type: str | None, body: Mapping[str, Any]) -> None:
    """One event of a claim (type None: listed), straight from the watch (kopffeed.py)."""
    namespace = body["metadata"].get("namespace") or ""
    if type != "DELETED":
        memo.access.check(access.namespaced(CONFIG.user_kinds), namespace)
        memo.watched.ensure(namespace)
    scheduler = _scheduler(memo)
    scheduler.observe_evc(type, body)
    if type == "DELETED" and not scheduler.claims.holds(namespace):
        memo.watched.release(namespace)  # its last claim is gone: stop watching it
