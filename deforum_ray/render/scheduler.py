"""Which chain runs on which worker, and what happens when one ends: the driver's bookkeeping as
named state, in the spirit of Ray's ``ActorPool``, with no Ray in it (tests drive it with a fake
submit function).

State: ``queued`` chains (with their attempt), ``waiting`` segments (until their clip's anchor
chain is done), ``running`` calls (a call renders a batch of chains on one worker), ``idle``
workers, ``restarting`` workers (a dead worker is idle again only once Ray restarted it),
``reports`` of the chains done and ``failures``. Each change is an event the caller reports:
:class:`ChainDone`, :class:`AnchorsReady`, :class:`ClipDone`, :class:`Retry`, :class:`Failed`,
:class:`WorkerGone`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from ..errors import first_line
from ..job.plan import ChainKind, ChainTask
from .worker import ChainError, ChainReport

ATTEMPTS = 3  # a chain that fails this many times fails the job
Batch = list[tuple[ChainTask, int]]  # chains of one call, each with its attempt (1, 2, ...)


@dataclass(frozen=True)
class ChainDone:
    task: ChainTask
    report: ChainReport


@dataclass(frozen=True)
class AnchorsReady:
    """A clip's anchor chain is done: its segments are queued."""

    task: ChainTask
    queued: int


@dataclass(frozen=True)
class ClipDone:
    """Every chain of a clip that this render runs is done (its video can be made)."""

    clip: str


@dataclass(frozen=True)
class Retry:
    task: ChainTask
    attempt: int  # the attempt that failed
    reason: str


@dataclass(frozen=True)
class Failed:
    task: ChainTask
    reason: str
    not_rendered: tuple[str, ...] = ()  # segments of a clip whose anchor chain failed


@dataclass(frozen=True)
class WorkerGone:
    """A worker out of restarts: the others carry on without it."""

    index: int


Event = ChainDone | AnchorsReady | ClipDone | Retry | Failed | WorkerGone


@dataclass
class ChainScheduler:
    """Chains handed to ``workers`` workers, up to ``per_worker`` each, until all are done."""

    workers: int
    per_worker: int
    queued: deque[tuple[ChainTask, int]] = field(default_factory=deque)
    waiting: dict[str, list[ChainTask]] = field(default_factory=dict)
    running: dict[Any, tuple[Batch, int]] = field(default_factory=dict)  # call -> (its chains, worker)
    idle: deque[int] = field(default_factory=deque)
    restarting: dict[Any, int] = field(default_factory=dict)  # worker.ready() call -> worker
    reports: list[ChainReport] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    left: dict[str, int] = field(default_factory=dict)  # frame chains of each clip not yet done

    @classmethod
    def of(cls, todo: Sequence[ChainTask], waiting: dict[str, list[ChainTask]], workers: int,
           per_worker: int) -> "ChainScheduler":
        scheduler = cls(workers, per_worker, deque((task, 1) for task in todo),
                        {clip: list(tasks) for clip, tasks in waiting.items()}, idle=deque(range(workers)))
        for task in [*todo, *(t for tasks in waiting.values() for t in tasks)]:
            if task.kind is not ChainKind.ANCHORS:
                scheduler.left[task.clip] = scheduler.left.get(task.clip, 0) + 1
        return scheduler

    @property
    def busy(self) -> bool:
        return bool(self.queued or self.running)

    @property
    def stuck(self) -> bool:
        """Chains are queued and no worker is left to take them, nor coming back."""
        return bool(self.queued) and not self.idle and not self.running and not self.restarting

    def calls(self) -> list[Any]:
        """What to wait on: the running calls and the restarting workers' ready calls."""
        return [*self.running, *self.restarting]

    def dispatch(self, submit: Callable[[int, Batch], Any]) -> None:
        """Give each idle worker its next batch; ``submit(worker, batch)`` returns the call."""
        while self.queued and self.idle:
            batch = next_batch(self.queued, self.per_worker, len(self.idle))
            worker = self.idle.popleft()
            self.running[submit(worker, batch)] = (batch, worker)

    def finished(self, call: Any, outcomes: Sequence[ChainReport | BaseException]) -> list[Event]:
        """A call returned (a report or an error per chain); its worker is idle again."""
        batch, worker = self.running.pop(call)
        self.idle.append(worker)
        return [event for (task, attempt), outcome in zip(batch, outcomes) for event in self._settle(task, attempt, outcome)]

    def worker_lost(self, call: Any, error: BaseException, ready: Callable[[int], Any]) -> list[Event]:
        """A call's worker died: each of its chains is retried; ``ready(worker)`` asks Ray when the
        worker is back."""
        batch, worker = self.running.pop(call)
        self.restarting[ready(worker)] = worker
        return [event for task, attempt in batch for event in self._settle(task, attempt, error)]

    def restart_of(self, call: Any) -> int | None:
        """The worker a ready call is about, if it is one."""
        return self.restarting.get(call)

    def restarted(self, call: Any) -> None:
        self.idle.append(self.restarting.pop(call))

    def still_restarting(self, call: Any, ready: Callable[[int], Any]) -> None:
        worker = self.restarting.pop(call)
        self.restarting[ready(worker)] = worker

    def gone(self, call: Any) -> list[Event]:
        return [WorkerGone(self.restarting.pop(call))]

    def _settle(self, task: ChainTask, attempt: int, outcome: ChainReport | BaseException) -> list[Event]:
        if isinstance(outcome, ChainReport):
            self.reports.append(replace(outcome, attempt=attempt))
            if task.kind is ChainKind.ANCHORS:
                self.queued.extend((segment, 1) for segment in self.waiting.pop(task.clip, []))
                return [AnchorsReady(task, len(self.queued))]
            self.left[task.clip] -= 1
            return [ChainDone(task, outcome), *([ClipDone(task.clip)] if self.left[task.clip] == 0 else [])]
        reason = failure_reason(outcome, task)
        if attempt < ATTEMPTS:
            self.queued.append((task, attempt + 1))
            return [Retry(task, attempt, reason)]
        self.failures.append(reason)
        lost = tuple(s.label for s in self.waiting.pop(task.clip, [])) if task.kind is ChainKind.ANCHORS else ()
        self.failures += [f"{label}: not rendered, its anchors failed" for label in lost]
        return [Failed(task, reason, lost)]


def next_batch(queue: deque[tuple[ChainTask, int]], per_worker: int, idle: int) -> Batch:
    """Take the chains for the next of ``idle`` idle workers off ``queue``.

    An anchor chain goes first and alone: its clip's segments all wait for it, and a call returns
    only when every chain in it is done. The others are spread evenly over the idle workers, up to
    ``per_worker`` each: a worker's time per frame hardly grows with its batch (a compiled one pads
    every call to its full batch), so two half calls finish in about half the time of one full call."""
    anchors = next((item for item in queue if item[0].kind is ChainKind.ANCHORS), None)
    if anchors is not None:
        queue.remove(anchors)
        return [anchors]
    return [queue.popleft() for _ in range(min(per_worker, -(-len(queue) // max(1, idle))))]


def failure_reason(exc: BaseException, task: ChainTask) -> str:
    """One line: a chain's own error (from the worker, or inside Ray's wrapper), else the worker's."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, ChainError):
        return str(cause)
    if isinstance(exc, ChainError):
        return str(exc)
    return f"{task.label}: worker failed: {first_line(exc)}"
