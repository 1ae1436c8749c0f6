"""The driver's bookkeeping (render.scheduler) driven by a fake submit: no Ray, no model."""

from __future__ import annotations

from collections import deque

import pytest

from deforum_ray.job.plan import ChainKind, ChainTask, Segment
from deforum_ray.render.scheduler import (ATTEMPTS, AnchorsReady, ChainDone, ChainScheduler, ClipDone, Failed, Retry,
                                          WorkerGone, next_batch)
from deforum_ray.render.worker import ChainError, ChainReport


def whole(clip: str, frames: int = 10) -> ChainTask:
    return ChainTask(clip, 0, frames, (Segment(clip, 0, 0, frames),))


def anchored(clip: str, segments: int, length: int = 5) -> tuple[ChainTask, list[ChainTask]]:
    parts = tuple(Segment(clip, i, i * length, (i + 1) * length) for i in range(segments))
    anchors = ChainTask(clip, 0, segments * length, parts, ChainKind.ANCHORS)
    return anchors, [ChainTask(clip, s.start, s.stop, (s,), ChainKind.SEGMENT) for s in parts]


def report(task: ChainTask, worker: int = 0) -> ChainReport:
    return ChainReport(task.label, task.kind, task.num_frames, 1.0, f"w{worker}", None)


class FakeCluster:
    """Calls are numbered; what each worker was given is kept."""

    def __init__(self) -> None:
        self.calls: dict[int, tuple[int, list[tuple[ChainTask, int]]]] = {}
        self.ready_calls: list[tuple[str, int]] = []

    def submit(self, worker: int, batch: list[tuple[ChainTask, int]]) -> int:
        call = len(self.calls)
        self.calls[call] = (worker, batch)
        return call

    def ready(self, worker: int) -> tuple[str, int]:
        self.ready_calls.append(("ready", worker))
        return ("ready", worker, len(self.ready_calls))


def test_a_clip_finishing_while_others_run_is_done_at_once_and_anchors_release_their_segments():
    anchors, segments = anchored("b", 3)
    chains = ChainScheduler.of([whole("a"), anchors], {"b": segments}, workers=2, per_worker=2)
    cluster = FakeCluster()
    chains.dispatch(cluster.submit)
    # the anchor chain goes first and alone, to the first idle worker; the clip to the other
    assert [[t.label for t, _ in batch] for _, batch in cluster.calls.values()] == [["b/anchors"], ["a"]]
    assert chains.busy and not chains.idle and chains.calls() == [0, 1]

    events = chains.finished(1, [report(whole("a"), 1)])
    assert [type(e) for e in events] == [ChainDone, ClipDone] and events[1].clip == "a"
    assert list(chains.idle) == [1] and chains.busy

    events = chains.finished(0, [report(anchors)])
    assert events == [AnchorsReady(anchors, 3)]
    chains.dispatch(cluster.submit)  # 3 segments over 2 idle workers: 2 and 1, evenly
    assert sorted(len(batch) for worker, batch in list(cluster.calls.values())[2:]) == [1, 2]
    for call in (2, 3):
        _, batch = cluster.calls[call]
        events = chains.finished(call, [report(task) for task, _ in batch])
    assert isinstance(events[-1], ClipDone) and events[-1].clip == "b"  # only after its last segment
    assert not chains.busy and len(chains.reports) == 5 and not chains.failures


def test_a_worker_lost_mid_chain_retries_its_chains_on_the_others_and_comes_back_once_restarted():
    tasks = [whole(c) for c in "abc"]
    chains = ChainScheduler.of(tasks, {}, workers=2, per_worker=2)
    cluster = FakeCluster()
    chains.dispatch(cluster.submit)
    lost_worker, lost = cluster.calls[0]
    events = chains.worker_lost(0, RuntimeError("The actor died unexpectedly"), cluster.ready)
    assert [type(e) for e in events] == [Retry] * len(lost)
    assert events[0].reason == f"{lost[0][0].label}: worker failed: The actor died unexpectedly"
    assert [(t.label, a) for t, a in chains.queued] == [(t.label, 2) for t, _ in lost]
    restart = next(iter(chains.restarting))
    assert chains.restart_of(restart) == lost_worker and lost_worker not in chains.idle

    chains.still_restarting(restart, cluster.ready)  # Ray is not done restarting it: ask again
    restart = next(iter(chains.restarting))
    chains.dispatch(cluster.submit)  # nobody idle yet: the retries wait
    assert len(cluster.calls) == 2
    chains.restarted(restart)
    chains.dispatch(cluster.submit)
    worker, retried = cluster.calls[2]
    assert worker == lost_worker and [a for _, a in retried] == [2] * len(lost)
    chains.finished(2, [report(t) for t, _ in retried])
    _, other = cluster.calls[1]
    chains.finished(1, [report(t) for t, _ in other])
    assert not chains.busy and sorted(r.label for r in chains.reports) == ["a", "b", "c"]
    assert {r.label: r.attempt for r in chains.reports} == {**{t.label: 2 for t, _ in lost},
                                                             **{t.label: 1 for t, _ in other}}


def test_a_chain_failing_every_attempt_fails_once_the_others_finish_and_its_segments_are_named():
    anchors, segments = anchored("b", 2)
    chains = ChainScheduler.of([anchors, whole("a")], {"b": segments}, workers=1, per_worker=1)
    cluster = FakeCluster()
    error = ChainError("b/anchors", 5, "CUDA error: an illegal memory access")
    for attempt in range(1, ATTEMPTS + 1):
        chains.dispatch(cluster.submit)
        call = len(cluster.calls) - 1
        (task, tried), = cluster.calls[call][1]
        assert task.label == "b/anchors" and tried == attempt  # the anchor chain keeps going first
        events = chains.finished(call, [error])
    assert events == [Failed(anchors, str(error), ("b/0", "b/1"))]
    chains.dispatch(cluster.submit)
    chains.finished(len(cluster.calls) - 1, [report(whole("a"))])
    assert not chains.busy and chains.failures == [str(error), "b/0: not rendered, its anchors failed",
                                                   "b/1: not rendered, its anchors failed"]


def test_every_worker_gone_leaves_the_queue_stuck():
    chains = ChainScheduler.of([whole("a"), whole("b")], {}, workers=1, per_worker=1)
    cluster = FakeCluster()
    chains.dispatch(cluster.submit)
    chains.worker_lost(0, RuntimeError("node lost"), cluster.ready)
    assert not chains.stuck  # it may come back
    (restart,) = chains.restarting
    assert chains.gone(restart) == [WorkerGone(0)]
    assert chains.stuck and chains.busy


@pytest.mark.parametrize(("queued", "per_worker", "idle", "sizes"), [(8, 4, 2, [4, 4]), (3, 4, 2, [2, 1]),
                                                                       (5, 2, 1, [2, 2, 1])])
def test_chains_are_spread_evenly_up_to_the_batch(queued, per_worker, idle, sizes):
    chains = ChainScheduler.of([whole(f"c{i}") for i in range(queued)], {}, workers=idle, per_worker=per_worker)
    cluster = FakeCluster()
    taken = []
    while chains.queued:
        chains.dispatch(cluster.submit)
        for call in list(chains.running):
            taken.append(len(chains.running[call][0]))
            chains.finished(call, [report(t) for t, _ in chains.running[call][0]])
    assert taken == sizes


def test_anchor_chains_go_first_and_alone_and_the_rest_spread_over_idle_workers():
    """The dispatch order: the anchor chain is on every segment's critical path, so it goes in a call
    of its own before anything queued ahead of it; the other chains split evenly between the idle
    workers, never more than chains_per_worker each (measured on two H100s: bench/scaling.py)."""
    clips = [(ChainTask(f"c{i}", 0, 8, ()), 1) for i in range(5)]
    anchors = (ChainTask("long", 0, 32, (), ChainKind.ANCHORS), 1)
    queue = deque(clips + [anchors])
    assert next_batch(queue, 4, 2) == [anchors]
    assert next_batch(queue, 4, 1) == clips[:4]  # one idle worker: a full call
    assert next_batch(queue, 4, 1) == clips[4:] and not queue
    queue = deque(clips)
    assert next_batch(queue, 4, 2) == clips[:3]  # five chains, two idle workers: 3 and 2
    assert next_batch(queue, 4, 1) == clips[3:]
    queue = deque(clips)
    assert [len(next_batch(queue, 2, idle)) for idle in (4, 3, 2, 1)] == [2, 1, 1, 1]  # 5 over 4 idle workers
