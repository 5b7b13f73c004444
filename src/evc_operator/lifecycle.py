"""The decisions of the EVC lifecycle, as a pure function of what was observed.

    decide(claim, users, now, dry_run, latest) -> Decision

`claim` is what the EVC says (its creation time, periods, the facts its status
recorded last time), `users` the pods that use it as observed now. The answer is
the status to record, what to do (nothing, delete, or report a dry-run deletion)
and when to look again. Nothing here reads a clock or calls the API, so every
rule can be tested exhaustively.

The rules, in one place:

| phase    | when                                   | deletes at                   |
|----------|----------------------------------------|------------------------------|
| Pending  | never had an active user (a pod that   | creation + 1 s + expiry      |
|          | ended before the claim existed is none,| (creation's second, rounded  |
|          | nor a workload at zero since before)   | up)                          |
| InUse    | at least one active user               | never (no deadline)          |
| Idle     | had users, none active now             | unused since + grace period  |
| Deleting | the operator is deleting it            | (already due)                |

An active user is a user pod not Succeeded or Failed (Pending, Running, Unknown
and Terminating pods are active until their object is gone). When the operator
cannot know exactly when the last user ended, it picks the later time: the
moment it observes the change, rounded up to a whole second (the precision of
Kubernetes timestamps), so a recorded deadline is never earlier than the true one.

Two readings of the API server's clock (servertime.py): `now`, a time it has surely
reached (whether a deadline has passed), and `latest`, a time it has surely not passed
(when a change already observed happened at the latest). Without `latest`, `now` is
both (a clock known exactly).
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import math
from collections.abc import Iterable

MAX_LISTED_USERS = 10
_ONE_SECOND = datetime.timedelta(seconds=1)


class Phase(enum.StrEnum):
    PENDING = "Pending"
    IN_USE = "InUse"
    IDLE = "Idle"
    DELETING = "Deleting"


class Countdown(enum.StrEnum):
    EXPIRY = "expiry"  # never used: counts from creation
    GRACE = "grace"  # used, now idle: counts from the end of the last use


class Action(enum.StrEnum):
    NONE = "none"
    DELETE = "delete"
    REPORT_DRY_RUN = "report-dry-run"  # due, but DRY_RUN is set: say so, delete nothing


@dataclasses.dataclass(frozen=True, slots=True)
class PodUse:
    """A pod that uses the claim (mounts it or matches its selector), as observed."""

    name: str
    active: bool
    created: datetime.datetime
    known: bool = False  # this process has seen it as a user before: its history is known
    ended: datetime.datetime | None = None  # a finished pod's end, as its kubelet reported
    # In use from its creation on: a pod, or a Job (active until its Complete or Failed
    # condition). Not a replicated workload, whose activity its replicas say (one created
    # at zero replicas never ran a pod), nor a CronJob or DaemonSet, active while it exists.
    from_creation: bool = True
    # A pod's controller, if it has one: `Kind.group/name` (users.py, unwatched.py)
    runner: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Claim:
    """What the EVC says: its identity in time, its periods, and its recorded facts."""

    created: datetime.datetime
    expiry_period: float  # seconds
    grace_period: float  # seconds
    keep: bool = False  # the keep annotation pauses deletion
    recorded_phase: Phase | None = None
    recorded_unused_since: datetime.datetime | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    phase: Phase
    active_users: tuple[str, ...]
    unused_since: datetime.datetime | None
    deletes_at: datetime.datetime | None
    countdown: Countdown | None
    action: Action
    wake_at: datetime.datetime | None  # when to decide again if nothing changes

    @property
    def listed_users(self) -> tuple[str, ...]:
        return self.active_users[:MAX_LISTED_USERS]


def ceil_to_second(moment: datetime.datetime) -> datetime.datetime:
    """The next whole second (or the moment itself if already whole): never earlier."""
    whole = moment.replace(microsecond=0)
    return whole if whole == moment else whole + datetime.timedelta(seconds=1)


def _period(seconds: float) -> datetime.timedelta:
    # Deadlines are kept to whole seconds, rounded up, like the timestamps they come from.
    return datetime.timedelta(seconds=math.ceil(seconds))


def decide(claim: Claim, users: Iterable[PodUse], now: datetime.datetime,
           *, dry_run: bool = False, latest: datetime.datetime | None = None) -> Decision:
    users = tuple(users)
    active = tuple(sorted(user.name for user in users if user.active))
    if active:
        return Decision(phase=Phase.IN_USE, active_users=active, unused_since=None,
                        deletes_at=None, countdown=None, action=Action.NONE, wake_at=None)

    unused_since = _unused_since(claim, users, now if latest is None else max(now, latest))
    if unused_since is None:
        # creationTimestamp is cut to the second: the claim may have been created up to
        # 1 s later than it says, so its expiry counts from the second rounded up.
        deletes_at = claim.created + _ONE_SECOND + _period(claim.expiry_period)
        phase, countdown = Phase.PENDING, Countdown.EXPIRY
    else:
        deletes_at = unused_since + _period(claim.grace_period)
        phase, countdown = Phase.IDLE, Countdown.GRACE

    if claim.keep:
        return Decision(phase=phase, active_users=(), unused_since=unused_since,
                        deletes_at=None, countdown=None, action=Action.NONE, wake_at=None)
    if now < deletes_at:
        return Decision(phase=phase, active_users=(), unused_since=unused_since,
                        deletes_at=deletes_at, countdown=countdown, action=Action.NONE,
                        wake_at=deletes_at)
    if dry_run:
        return Decision(phase=phase, active_users=(), unused_since=unused_since,
                        deletes_at=deletes_at, countdown=countdown,
                        action=Action.REPORT_DRY_RUN, wake_at=None)
    return Decision(phase=Phase.DELETING, active_users=(), unused_since=unused_since,
                    deletes_at=deletes_at, countdown=countdown, action=Action.DELETE,
                    wake_at=None)


def _maybe_used_after(user: PodUse, moment: datetime.datetime) -> bool:
    """Whether a finished user may have been in use after `moment`, a recorded end of use.

    By name alone a user is no proof of what this process saw: a pod deleted and created
    again under the same name, or a Deployment scaled up and down again while the watch was
    away, looks known. A recorded end is past the end of every user seen when it was
    decided (`_unused_since`), so a user whose end or creation is not before it is another
    story, known name or not. A pod's creation is the API server's stamp; its reported end
    is its node's clock, which may run behind: created after the moment, it was in use
    after it, whatever its end says. A Job likewise (`from_creation`): its reported end is
    its controller's clock (kube-controller-manager's, or another's with
    `spec.managedBy`). Stamps are cut to the second and the recorded end rounded up: one
    stamped in the moment's own second, not seen, may be newer (seen, it may be the pod
    seen, created and gone in the moment itself). One stamped in the second before is
    judged by its reported end: a pod that ran for less than a second before the record is
    the common case, and its deadline must not move at a restart."""
    if user.from_creation and (user.created > moment
                               or (not user.known and user.created == moment)):
        return True
    if user.ended is not None:
        # Reported ends are cut to the second: one in the recorded second may be after it.
        return user.ended >= moment
    if user.known:
        return False  # we saw it ourselves: its end is in the record already
    # No reported end: was it created after? creationTimestamp is cut to the second, and
    # the recorded end rounded up, so a pod stamped in the second before may be newer.
    return user.created >= moment - _ONE_SECOND


def _unused_since(claim: Claim, users: tuple[PodUse, ...],
                  latest: datetime.datetime) -> datetime.datetime | None:
    """When the last active user ended; None if the claim never had one.

    Only called when no user is active now. A user that ended unreported (deleted, say)
    ended before it was observed to, so before `latest`: the server's clock taken the late
    way. Taken the early way (`now`), a second of the clock's uncertainty could fall
    between the truth and the record, and the deadline counted from it come early.
    """
    # Past the reported end of every user, too: ends are cut to the second, so
    # ceil(latest) can fall in a user's last second. Recorded there, a restart could not
    # tell that user from one used after the record (_maybe_used_after), and would count
    # from the restart instead; nor could this process, should the user's name come back.
    observed = max([ceil_to_second(latest), *(user.ended + _ONE_SECOND for user in users
                                              if user.ended is not None)])
    recorded = claim.recorded_unused_since
    if claim.recorded_phase in (Phase.IDLE, Phase.DELETING) and recorded is not None:
        # A recorded end is kept (restarts never reset a countdown), unless a finished
        # user we never saw may have been used after it, while we did not watch: then,
        # later: now.
        if any(_maybe_used_after(user, recorded) for user in users):
            return observed
        return max(recorded, claim.created)  # nothing ends before the claim began
    if claim.recorded_phase is Phase.IN_USE:
        return observed  # the last user ended since we last looked
    if any(not _ended_before(user, claim.created) for user in users):
        # Never recorded as used, yet finished users exist: they came and went unseen.
        return observed
    return None


def _ended_before(user: PodUse, created: datetime.datetime) -> bool:
    """The user finished before the claim existed, so it never used it: it starts no grace.

    Both timestamps are cut to the second; an end in an earlier second than the claim's
    creation is surely before it. Without a reported end, it may have ended after. A pod
    or a Job created in or after the claim's second did not end before it, whatever the
    clock of its node or controller reported (one running behind reports ends too early)."""
    return (user.ended is not None and user.ended < created
            and (not user.from_creation or user.created < created))


def trusted(recorded: Claim, ours: Claim | None) -> Claim:
    """The claim to decide on: its recorded facts, unless they differ from those this
    process wrote last (`ours`) -- then the later of the two ends of use where both
    record one (when unsure, later), so a status rewritten by someone else never makes a
    deadline earlier; where ours says in use, or records no end (never used), ours: a
    record that differs is then someone else's, not a use (another leader's, sealed after
    ours, has replaced ours before this is asked: reconcile `_overtaken`)."""
    if ours is None or (recorded.recorded_phase, recorded.recorded_unused_since) == (
            ours.recorded_phase, ours.recorded_unused_since):
        return recorded
    if ours.recorded_phase is Phase.IN_USE or recorded.recorded_unused_since is None:
        return dataclasses.replace(recorded, recorded_phase=ours.recorded_phase,
                                   recorded_unused_since=ours.recorded_unused_since)
    if ours.recorded_unused_since is not None:
        later = max(ours.recorded_unused_since, recorded.recorded_unused_since)
        return dataclasses.replace(recorded, recorded_phase=ours.recorded_phase,
                                   recorded_unused_since=later)
    # Ours has no end of use: a recorded one is someone else's, and would only be earlier.
    return dataclasses.replace(recorded, recorded_phase=ours.recorded_phase,
                               recorded_unused_since=None)


def believed(claim: Claim, *, verified: bool, now: datetime.datetime) -> Claim:
    """The claim to decide on when this process has no facts of its own about it (after a
    start or a change of leader): its recorded facts if they are verified as the
    operator's (sealed by it, or a new claim that has none yet), else the later way.

    An unverified record says nothing: the claim may never have been used (its expiry
    counts from creation) or its last user may have ended unseen at any moment up to now
    (its grace counts from now). It is taken as whichever ends later, so that no record
    written by someone else can make a deadline earlier than the true one. `now` is the
    server's clock taken the late way (`decide`'s `latest`).
    """
    if verified:
        return claim
    never_used = claim.created + _ONE_SECOND + _period(claim.expiry_period)
    used_until_now = ceil_to_second(now) + _period(claim.grace_period)
    if never_used >= used_until_now:
        return dataclasses.replace(claim, recorded_phase=None, recorded_unused_since=None)
    # Recorded as in use: with no active user now, its grace counts from now.
    return dataclasses.replace(claim, recorded_phase=Phase.IN_USE, recorded_unused_since=None)


def end_of_use(user: PodUse, created: datetime.datetime,
               latest: datetime.datetime) -> datetime.datetime | None:
    """When a user that left the claim's users ended its use, at the latest: its reported
    end (the second after it: ends are cut to the second); active when it left, or with
    no end it reported, the moment it was seen to leave (`latest`, rounded up). None if it
    ended before the claim existed (no use of this claim)."""
    if user.active or user.ended is None:
        return ceil_to_second(latest)
    if _ended_before(user, created):
        return None
    if user.ended < created:  # created after the claim, its clock behind: when, unknown
        return ceil_to_second(latest)
    return user.ended + _ONE_SECOND


def end_unseen(claim: Claim, user: PodUse, latest: datetime.datetime) -> datetime.datetime | None:
    """The end of use to keep for a user that left while this process did not decide (a
    standby): as `end_of_use`, but not before the moment it was seen to leave (`latest`)
    where the claim's record does not cover it, as a leader's decision would count then
    (`_unused_since`): a user created after the recorded end, a finish this process
    never saw, is known only by its node's clock, which may run behind."""
    end = end_of_use(user, claim.created, latest)
    recorded = claim.recorded_unused_since
    if end is None or (claim.recorded_phase in (Phase.IDLE, Phase.DELETING)
                       and recorded is not None and not _maybe_used_after(user, recorded)):
        return end
    return max(end, ceil_to_second(latest))


def carried_end(recorded: Claim, ours: Claim | None, departed: Iterable[PodUse],
                latest: datetime.datetime) -> datetime.datetime | None:
    """What a replica that stops leading must not forget of a claim: the latest end of use
    it knows that the claim's record may lack. Its own facts, if they are not the stored
    ones (a status write refused or failed: in use until now, or unused since when it
    decided), and the users that left since it last decided (`departed`), each as a
    decision now would count it (`end_unseen`)."""
    basis = ours if ours is not None else recorded  # what its next decision rests on
    ends = [end_unseen(basis, user, latest) for user in departed]
    if ours is not None and (ours.recorded_phase, ours.recorded_unused_since) != (
            recorded.recorded_phase, recorded.recorded_unused_since):
        if ours.recorded_phase is Phase.IN_USE:
            ends.append(ceil_to_second(latest))
        else:
            ends.append(ours.recorded_unused_since)
    return max((end for end in ends if end is not None), default=None)


def with_end_of_use(claim: Claim, end: datetime.datetime | None) -> Claim:
    """The claim's recorded facts, with a use that ended at `end` which they may lack (one
    this replica saw while another led, or decided and had not written when it stopped
    leading): whichever makes the deadline later, never earlier. Recorded in use, the
    grace counts from when no user is active anyway."""
    if end is None or claim.recorded_phase is Phase.IN_USE:
        return claim
    since = claim.recorded_unused_since
    if since is not None and claim.recorded_phase in (Phase.IDLE, Phase.DELETING):
        if since >= end:  # (decide counts from a recorded end in those phases only)
            return claim
    elif claim.created + _ONE_SECOND + _period(claim.expiry_period) >= (
            end + _period(claim.grace_period)):
        return claim  # never used by its record: its expiry ends later anyway
    return dataclasses.replace(claim, recorded_phase=Phase.IDLE, recorded_unused_since=end)
