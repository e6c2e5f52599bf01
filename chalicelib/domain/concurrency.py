"""Concurrency groups: which run of a group may be active, which ones wait, which one is replaced.

A pipeline chooses a mode (its setting, ``PUT /api/pipelines/{p}/concurrency``) and a default
group; a run may name another group of its pipeline at create (``concurrencyGroup``):

- ``PARALLEL`` (the default, what stagetrack always did): runs overlap freely; no group is read
  or written;
- ``QUEUED`` (CodePipeline QUEUED, GitLab resource groups, GoCD locking): a new run whose group
  holds an active run waits in status QUEUED and starts by itself when the group frees. Its
  ``queue`` discipline says which runs wait: ``ALL`` (the default) keeps every one, first come
  first served; ``NEWEST`` (GitHub ``concurrency`` without ``cancel-in-progress``) keeps only
  the newest: a new waiting run replaces the one waiting, which is cancelled in the same
  transaction that queues the new one;
- ``SUPERSEDED`` (CodePipeline SUPERSEDED, GitHub ``cancel-in-progress``): a new run cancels the
  group's active run in the same transaction that creates it, and the runs waiting before it
  (in a group shared with QUEUED runs) stay in their place.

A group is one record (``Group``): the run that holds it (``active``) and the runs waiting for
it, oldest first. Every change of it is conditioned on its version, so two creates, or a create
and a release, can never both believe the group was free. The rules here are pure: the service
reads the group, asks ``admit`` or ``release`` what to write, and writes it in one transaction.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum

from .errors import Conflict


class Mode(str, Enum):
    PARALLEL = "PARALLEL"
    QUEUED = "QUEUED"
    SUPERSEDED = "SUPERSEDED"


class Queue(str, Enum):
    """Which runs wait in a group held by another (the runs a QUEUED pipeline creates, and those
    a PARALLEL pipeline's runs put in a group they name). Named for what is kept waiting: every
    run (``ALL``, CodePipeline's QUEUED, GoCD, GitLab's ``oldest_first``), or the newest only
    (``NEWEST``, GitHub's one pending run per group). SUPERSEDED runs never wait."""

    ALL = "ALL"
    NEWEST = "NEWEST"


# How many runs may wait in one group. A group is one item: its queue must stay small (each id is
# at most ~110 bytes), and a queue this long is a pipeline that never catches up anyway.
MAX_QUEUE = 50
GROUP_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$"
DEFAULT_SETTING = {"mode": Mode.PARALLEL.value, "group": None, "queue": Queue.ALL.value}


class QueueFull(Conflict):
    code = "concurrency_queue_full"


class GroupBusy(Conflict):
    code = "concurrency_group_busy"


class RunQueued(Conflict):
    code = "run_queued"


@dataclass(frozen=True)
class Setting:
    """A pipeline's concurrency: its mode, default group (None: the pipeline's own name) and the
    queue discipline of the runs that wait (a setting stored before it existed: ``ALL``)."""

    mode: Mode = Mode.PARALLEL
    group: str | None = None
    queue: Queue = Queue.ALL

    @classmethod
    def of(cls, stored: dict | None) -> Setting:
        if not stored:
            return cls()
        return cls(Mode(stored.get("mode", Mode.PARALLEL.value)), stored.get("group"),
                   Queue(stored.get("queue") or Queue.ALL.value))

    def as_dict(self) -> dict:
        return {"mode": self.mode.value, "group": self.group, "queue": self.queue.value}


@dataclass(frozen=True)
class Placement:
    """Where a new run goes: its group, the mode it was created under and, if it is to wait,
    the queue discipline (None: no group)."""

    group: str
    mode: Mode
    queue: Queue = Queue.ALL


def place(pipeline: str, setting: Setting, run_group: str | None) -> Placement | None:
    """The group a new run joins, and how.

    A run that names no group follows its pipeline: none under PARALLEL, else the default group
    (the pipeline's name unless the setting names one). A run that names a group joins it with
    the pipeline's mode -- and with QUEUED on a PARALLEL pipeline: naming a group asks for runs
    of that group not to overlap, as GitHub's ``concurrency.group`` does without
    ``cancel-in-progress``. The setting's ``queue`` comes along either way.
    """
    if run_group is not None:
        mode = Mode.QUEUED if setting.mode == Mode.PARALLEL else setting.mode
        return Placement(run_group, mode, setting.queue)
    if setting.mode == Mode.PARALLEL:
        return None
    return Placement(setting.group or pipeline, setting.mode, setting.queue)


@dataclass(frozen=True)
class Group:
    """One concurrency group of a pipeline: the run holding it and the runs queued for it.

    ``version`` is the stored item's (None: never written); every write is conditioned on it."""

    pipeline: str
    name: str
    active: str | None = None
    queue: tuple[str, ...] = ()
    version: int | None = None

    @property
    def free(self) -> bool:
        return self.active is None


START, QUEUE, SUPERSEDE = "START", "QUEUE", "SUPERSEDE"


@dataclass(frozen=True)
class Admission:
    """What creating run ``run_id`` in a group does: START (it holds the group), QUEUE (it waits)
    or SUPERSEDE (it holds the group and ``superseded``, the run that held it, is cancelled in the
    same transaction). ``group`` is the group as it is to be written. ``replaced`` (QUEUE under
    the NEWEST discipline): the ids that waited, oldest first, which no longer wait -- the
    caller cancels those still QUEUED ("replaced by run <id>") with the same write."""

    kind: str
    group: Group
    superseded: str | None = None
    replaced: tuple[str, ...] = ()


def admit(group: Group, run_id: str, mode: Mode, queue: Queue = Queue.ALL) -> Admission:
    """The rule at create. A free group is taken. A held one: SUPERSEDED takes the group from
    its holder, which the caller cancels with the same write; QUEUED appends the run to the
    queue (``ALL``: refused with 409 once ``MAX_QUEUE`` runs wait) or, ``NEWEST``, makes it the
    only run waiting, replacing those that waited (never full: at most one waits)."""
    if group.free:
        return Admission(START, replace(group, active=run_id))
    if mode == Mode.SUPERSEDED:
        return Admission(SUPERSEDE, replace(group, active=run_id), superseded=group.active)
    if queue == Queue.NEWEST:
        return Admission(QUEUE, replace(group, queue=(run_id,)), replaced=group.queue)
    if len(group.queue) >= MAX_QUEUE:
        raise QueueFull(f"{MAX_QUEUE} runs already wait in concurrency group {group.name!r} of "
                        f"pipeline {group.pipeline!r}; let some finish or cancel them",
                        details={"group": group.name, "active": group.active})
    return Admission(QUEUE, replace(group, queue=(*group.queue, run_id)))


@dataclass(frozen=True)
class Release:
    """What freeing a group writes: the group as it is to be written, the run promoted to hold
    it (None: none waits), and the queued ids dropped because they no longer wait."""

    group: Group
    promoted: str | None
    dropped: tuple[str, ...] = field(default=())


def release(group: Group, holder: str, still_waiting: set[str]) -> Release | None:
    """The group freed by ``holder`` (it ended, was deleted, or its lock was released): the
    oldest queued run that still waits (``still_waiting``: the queued ids whose run is still
    QUEUED; a queued run that was cancelled or deleted meanwhile is dropped) holds it next.
    None when ``holder`` does not hold the group (already released: nothing to write)."""
    if group.active != holder:
        return None
    dropped: list[str] = []
    for index, candidate in enumerate(group.queue):
        if candidate in still_waiting:
            rest = group.queue[index + 1:]
            return Release(replace(group, active=candidate, queue=rest), candidate, tuple(dropped))
        dropped.append(candidate)
    return Release(replace(group, active=None, queue=()), None, tuple(dropped))


def reacquire(group: Group, run_id: str) -> Group | None:
    """A finished run of the group becomes active again (a retry, a sender's new attempt): it
    takes the group if it is free or still its own (None: nothing to write), else 409 -- two
    runs of a group are never active at once."""
    if group.active == run_id:
        return None
    if group.free:  # a free group has an empty queue (``release`` empties it when it frees)
        return replace(group, active=run_id)
    raise GroupBusy(f"run {group.active!r} holds concurrency group {group.name!r}; this run can "
                    f"become active again only once that one has ended",
                    details={"group": group.name, "active": group.active})


def queue_place(group: Group, run_id: str) -> dict | None:
    """Where a waiting run stands in its group, for people (the run view): the run holding the
    group, its place in the queue (1: the next to start; first come, first served, as ``release``
    promotes) and how many runs wait. None when the run is not in the queue (it holds the group,
    or it no longer waits)."""
    if run_id not in group.queue:
        return None
    return {"group": group.name, "holder": group.active, "position": group.queue.index(run_id) + 1,
            "waiting": len(group.queue)}
