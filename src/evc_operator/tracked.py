"""The claims the operator tracks: one record per EVC, and the one copy of its body.

A record holds the EVC's view (evc.py) and what this process learned about the claim
while deciding on it. Forgetting a claim is dropping its record. The work queue's part
(when to look again, failures) is the queue's.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
from collections.abc import Iterator, Mapping
from typing import Any

from evc_operator import lifecycle
from evc_operator.evc import EvcView, Key, evc_view
from evc_operator.freshness import PodList
from evc_operator.settings import Settings
from evc_operator.users import PodView


@dataclasses.dataclass(frozen=True, slots=True)
class Rejection:
    """A part of a PVC update the API server refused for good (403, 422): on what it was
    tried (claims.update_attempt), how many times in a row, and when to try it again."""

    attempt: tuple[object, ...]
    times: int
    retry_at: datetime.datetime


@dataclasses.dataclass(frozen=True)
class DeleteRefusal:
    """A deletion of the claim the API server refused for good (403, 422: an admission
    policy or webhook on deletes, which the start's permission check cannot see): what it
    said, how many times in a row, and when to try again."""

    why: str
    times: int
    retry_at: datetime.datetime


@dataclasses.dataclass(slots=True)
class TrackedClaim:
    view: EvcView
    # A pending deletion (the decision with its deadline), for proofs, logs and metrics.
    countdown: lifecycle.Decision | None = None
    seen_users: tuple[str, ...] = ()  # users this process has seen, sorted
    # The parts of a PVC update ("metadata", "spec") the API server refused, by part.
    rejected: dict[str, Rejection] | None = None
    refusals: int = 0  # its PVC's creations or updates refused or failed in a row
    delete_refused: DeleteRefusal | None = None  # while its deletion is refused
    status_failures: int = 0  # its status writes refused or failed in a row
    # (uid, facts) this process decided last: recorded, or being recorded (a write that
    # fails or is refused leaves them here, and later decisions build on them).
    written: tuple[str, lifecycle.Claim] | None = None
    # The deadline a dry run last reported it due at (one: a set grew by one an idle period).
    reported_dry_run: datetime.datetime | None = None
    sealed_at: datetime.datetime | None = None  # when this process last sealed its status
    # When its record is to be confirmed (seal.confirm_after, confirm.py), if it is.
    confirm_after: datetime.datetime | None = None
    # When a status write that only says who the users are may go (budget.py), if waiting.
    write_after: datetime.datetime | None = None
    # The proof's view it was last decided on, while the informers lag behind it
    # (freshness.PodSnapshot.behind): until they catch up, it is decided on that view.
    ahead: PodList | None = None
    # Users that left the index (deleted, or no longer mounting or matching it) since it
    # was last decided, as last seen, by name: `depart` (None: none, as most claims).
    departed: dict[str, PodView] | None = None
    # An end of use its record may lack, kept while this replica does not lead: a user
    # that left while it stood by, or what it knew and had not written when it stopped
    # leading (lifecycle.carried_end). Taken into its next decision as leader.
    unseen_end: datetime.datetime | None = None
    # The phase its last transition Event was to be told from, when the write and the
    # Event were refused as not leading: `written` holds the phase decided then.
    untold: tuple[lifecycle.Phase | None] | None = None
    # Of the status whose write failed last (None once one is written), the conditions its
    # Warnings were told by (status.warned): not told again at each try.
    unwritten: Mapping[str, Any] | None = None

    def depart(self, view: PodView) -> None:
        """A user left the index: kept, as last seen, until a decision has taken it in.
        Gone from the index, a pod this process never decided on (created and deleted
        between two looks, or while a lagging watch caught up during a deletion's proof)
        would leave no trace of its use, and the claim be deleted before its true
        deadline; one that was running when deleted was in use until then."""
        if self.departed is None:
            self.departed = {}
        self.departed[view.name] = view

    def left_unseen(self, view: PodView, latest: datetime.datetime) -> None:
        """A user left while this replica did not lead: it decides nothing then, and keeps
        only the latest end of use of those that left (one time, however many leave)."""
        self.note_end(lifecycle.end_unseen(self.view.claim, view.use(), latest))

    def note_end(self, end: datetime.datetime | None) -> None:
        if end is not None and (self.unseen_end is None or end > self.unseen_end):
            self.unseen_end = end

    def taken_in(self, taken: Mapping[str, PodView]) -> None:
        """Those departed users a decision took in (and no later departure of the same
        name) are kept no more."""
        if self.departed is None:
            return
        for name, view in taken.items():
            if self.departed.get(name) is view:
                del self.departed[name]
        if not self.departed:
            self.departed = None

    def decided(self, decision: lifecycle.Decision) -> None:
        """Keep what was just decided, before its status write: should that write fail
        (429, a refusing admission policy, a timeout), the next decision rests on these
        facts, never on the older ones still stored."""
        claim = self.view.claim
        if (claim.recorded_phase, claim.recorded_unused_since) != (decision.phase,
                                                                   decision.unused_since):
            claim = dataclasses.replace(claim, recorded_phase=decision.phase,
                                        recorded_unused_since=decision.unused_since)
        # The same facts as stored (a restart's resume: 10,000 of them) share the view's.
        self.written = (self.view.uid, claim)
        if self.unseen_end is not None and (
                decision.phase is lifecycle.Phase.IN_USE
                or (decision.unused_since is not None
                    and decision.unused_since >= self.unseen_end)):
            # Taken in: its facts hold it now. Not while the claim stays Pending because
            # its expiry ends later anyway: a shorter expiryPeriod later must not lose it.
            self.unseen_end = None

    def rejected_retry(self) -> datetime.datetime | None:
        """When a refused PVC update is to be tried again, if one was refused."""
        if not self.rejected:
            return None
        return min(rejection.retry_at for rejection in self.rejected.values())

    def ours(self) -> lifecycle.Claim | None:
        """The facts this process decided last about this very EVC (same uid)."""
        if self.written is None or self.written[0] != self.view.uid:
            return None
        return self.written[1]


def newer(candidate: str, current: str) -> bool:
    """Whether a resourceVersion is newer than the one we hold (they are etcd revisions)."""
    try:
        return int(candidate) > int(current)
    except ValueError:
        return True


def key_of(body: Mapping[str, Any]) -> Key:
    return (body["metadata"].get("namespace") or "", body["metadata"]["name"])


class Tracked:
    """Every tracked claim by key, and per namespace the names of those with a selector."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._claims: dict[Key, TrackedClaim] = {}
        self._with_selector: dict[str, set[str]] = {}
        self._per_namespace: collections.Counter[str] = collections.Counter()

    def __contains__(self, key: object) -> bool:
        return key in self._claims

    def __len__(self) -> int:
        return len(self._claims)

    def __iter__(self) -> Iterator[Key]:
        return iter(list(self._claims))

    def get(self, key: Key) -> TrackedClaim | None:
        return self._claims.get(key)

    def records(self) -> list[TrackedClaim]:
        return list(self._claims.values())

    def with_selector(self, namespace: str) -> list[str]:
        return list(self._with_selector.get(namespace, ()))

    def observe(self, body: Mapping[str, Any]) -> bool:
        """Take in an EVC as watched; whether it tells anything new.

        Older than, or the echo of, what our own write already told us is not new: at
        100 claims a second, looking again at each write's echo doubled the work.
        """
        key = key_of(body)
        held = self._claims.get(key)
        if held and held.view.uid == body["metadata"].get("uid") and not newer(
                body["metadata"].get("resourceVersion") or "", held.view.resource_version):
            return False
        view = evc_view(body, self.settings)
        if held is None:
            self._claims[key] = TrackedClaim(view)
            self._per_namespace[key[0]] += 1
        elif held.view.uid != view.uid:
            # Another claim of that name (the one held deleted, its deletion not seen yet):
            # nothing this process decided or saw about the other is a fact about this one.
            self._claims[key] = TrackedClaim(view)
        else:
            held.view = view
        names = self._with_selector.setdefault(key[0], set())
        if view.selector:
            names.add(key[1])
        else:
            names.discard(key[1])
        return True

    def remember(self, body: Mapping[str, Any], uid: str) -> bool:
        """Our own write's result (or a read's), for the claim with this uid, is a fresher
        view than the one held, unless the watch brought a later one meanwhile (someone
        wrote after us: put back, the older view's resourceVersion would have every
        deletion refused until the claim changed again); do not wait for the watch.
        Whether the view is now this one.

        The facts we wrote are kept too: a status that someone else rewrote afterwards
        is not believed where it would make a deadline earlier. A write goes by name: one
        that landed on another claim of that name (the one it was for deleted and made
        again meanwhile) is no fact about either, and is not kept.
        """
        return self._take(body, uid, written=True)

    def refresh(self, body: Mapping[str, Any], uid: str) -> bool:
        """A read of the claim (not our own write): the freshest view, unless the watch
        brought a later one; never facts this process decided (`written`: a record it
        decided and could not write would be lost, and a deadline it made later come
        early). Whether the view is now this one."""
        return self._take(body, uid, written=False)

    def _take(self, body: Mapping[str, Any], uid: str, *, written: bool) -> bool:
        held = self._claims.get(key_of(body))
        if (held is None or body["metadata"].get("uid") != uid
                or held.view.uid != uid):
            return False
        view = evc_view(body, self.settings)
        if written:
            held.written = (view.uid, view.claim)
        if not newer(view.resource_version, held.view.resource_version):
            return False
        held.view = view
        return True

    def forget_decisions(self, latest: datetime.datetime) -> None:
        """Keep each claim's view, as if this process had just started (leadership lost:
        what it decided and saw may be overtaken by another leader's), and the latest end
        of use it knew that the claim's record may lack (`latest`: the server's clock, the
        late way). Forgotten, that end would leave a claim to be deleted on its older
        record, should this replica lead again: a user seen and gone while the status
        writes were refused (the trouble that lost the Lease, often)."""
        for key, held in self._claims.items():
            kept = TrackedClaim(held.view, unseen_end=held.unseen_end)
            kept.note_end(lifecycle.carried_end(
                held.view.claim, held.ours(),
                [view.use() for view in (held.departed or {}).values()], latest))
            self._claims[key] = kept

    def forget(self, key: Key) -> None:
        if self._claims.pop(key, None) is not None:
            self._per_namespace[key[0]] -= 1
            if not self._per_namespace[key[0]]:
                del self._per_namespace[key[0]]
                self._with_selector.pop(key[0], None)
        self._with_selector.get(key[0], set()).discard(key[1])

    def holds(self, namespace: str) -> bool:
        """Whether any tracked claim is in this namespace."""
        return namespace in self._per_namespace
