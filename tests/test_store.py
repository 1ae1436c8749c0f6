"""The store: whole objects vouched for by markers, checkpoints, run log, events."""

from __future__ import annotations

import torch

from deforum_ray.store import MARKER, RenderStore


def test_put_get_round_trip_with_marker(tmp_path):
    store = RenderStore(str(tmp_path / "job"))
    digest = store.put("a/b.bin", b"hello")
    assert store.get("a/b.bin") == b"hello"
    assert (tmp_path / "job" / "a" / "b.bin.ok").read_text() == f'{{"size": 5, "sha256": "{digest}"}}'
    assert store.vouched_names("a") == ["b.bin"]


def test_object_without_marker_is_not_trusted(tmp_path):
    store = RenderStore(str(tmp_path / "job"))
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "half.bin").write_bytes(b"written, but the writer died before the marker")
    assert store.get("half.bin") is None
    assert store.vouched_names("") == []
    assert store.events() == []  # an unfinished write is not a problem, just not there


def test_truncated_and_corrupt_objects_are_refused_and_reported(tmp_path):
    store = RenderStore(str(tmp_path / "job"))
    store.put("t.bin", b"0123456789")
    store.put("c.bin", b"0123456789")
    (tmp_path / "job" / "t.bin").write_bytes(b"01234")
    (tmp_path / "job" / "c.bin").write_bytes(b"0123456780")
    assert store.get_many(["t.bin", "c.bin"]) == {"t.bin": None, "c.bin": None}
    kinds = {(e["object"], e["kind"]) for e in store.events()}
    assert kinds == {("t.bin", "corrupt"), ("c.bin", "corrupt")}
    assert any("truncated" in e["message"] for e in store.events())


def test_memory_store_and_urls(tmp_path):
    store = RenderStore("memory://bucket/jobs/x")
    store.put("f.txt", b"x")
    assert store.get("f.txt") == b"x" and store.url("f.txt") == "memory://bucket/jobs/x/f.txt"
    assert RenderStore(str(tmp_path)).url("f.txt") == f"{tmp_path}/f.txt"


def test_checkpoint_round_trip_and_corruption(tmp_path):
    store = RenderStore(str(tmp_path / "job"))
    tensors = {"frame": torch.tensor([8]), "latent": torch.randn(1, 16, 4, 4)}
    store.put_checkpoint("c", 0, 8, tensors)
    store.put_checkpoint("c", 0, 4, tensors)
    assert store.checkpoint_frames("c", 0) == [4, 8]
    back = store.get_checkpoint("c", 0, 8)
    assert torch.equal(back["latent"], tensors["latent"])
    path = tmp_path / "job" / store.checkpoint_rel("c", 0, 8)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    assert store.get_checkpoint("c", 0, 8) is None
    assert store.events()[-1]["object"] == store.checkpoint_rel("c", 0, 8)


def test_run_log_is_parquet_rows(tmp_path):
    import pyarrow.parquet as pq

    store = RenderStore(str(tmp_path / "job"))
    rows = [{"clip": "c", "segment": 0, "frame": n, "worker": "w:1", "chains": 1, "diffused": n != 1, "seconds": 0.1,
             "timestamp": 100.0 + n,
             "gpu_peak_gib": None if n < 2 else 23.5} for n in range(3)]  # empty on a CPU worker
    store.put_runlog(rows[:2], "w:1")
    store.put_runlog(rows[2:], "w:1")
    assert store.read_runlog() == rows
    files = list((tmp_path / "job" / "runlog").glob("*.parquet"))
    assert len(files) == 2 and pq.read_table(files[0]).column_names == list(rows[0])
    # A run killed between logging frame 2 and its checkpoint: the next run renders it again.
    again = {**rows[2], "worker": "w:2", "timestamp": 200.0}
    store.put_runlog([again], "w:2")
    assert store.read_runlog() == rows[:2] + [again]  # one row per stored frame: its latest rendering
    assert all((f.parent / (f.name + MARKER)).exists() for f in files)


# --- the write queue: store writes off the model's thread, in order -------------------------------

def _frame_writer(tmp_path, depth: int, every: int = 2):
    import numpy as np

    from deforum_ray.frame.loop import FrameOut, LoopState
    from deforum_ray.job.plan import ChainTask, Segment
    from deforum_ray.render.sinks import FrameWriter, WriteQueue

    store = RenderStore(str(tmp_path / "job"))
    task = ChainTask("c", 0, 6, (Segment("c", 0, 0, 6),))
    writer = FrameWriter(store, task, model=None, checkpoint_every=every, worker="w:1", writes=WriteQueue(depth))

    def frame(n: int) -> None:
        z = torch.full((1, 16, 2, 2), float(n))
        writer(FrameOut(n, z, LoopState(n + 1, z, -z, None), True, picture=np.full((16, 16, 3), n, np.uint8)))

    return store, writer, frame


def test_the_write_queue_keeps_the_synchronous_write_order(tmp_path):
    """Writes handed to the queue land in the order a synchronous writer makes them: each frame's
    latent, then its PNG, a checkpoint only after every frame before it, DONE last."""
    orders = []
    for depth in (0, 3):
        store, writer, frame = _frame_writer(tmp_path / str(depth), depth)
        order = []
        put = store.put
        store.put = lambda rel, data: (order.append(rel), put(rel, data))[1]
        for n in range(6):
            frame(n)
        writer.finish()
        orders.append([rel.split("/", 3)[-1] if not rel.startswith("runlog/") else "runlog" for rel in order])
        assert store.frames_done("c", 0) == list(range(6)) and store.checkpoint_frames("c", 0) == [2, 4]
        assert len(store.read_runlog()) == 6
    assert orders[0] == orders[1]
    assert [rel for rel in orders[0] if rel != "runlog"][-1].endswith("DONE.json") and orders[0].index("ckpt/000004.safetensors") > orders[0].index(
        "frames/000003.png")


def test_a_failed_write_fails_the_chain_and_nothing_after_it_is_written(tmp_path):
    """The disk fails on frame 3's PNG: the chain's next frame raises that error, nothing queued
    after it is written (no checkpoint that would vouch for a missing frame), finish() raises it."""
    import pytest

    store, writer, frame = _frame_writer(tmp_path, depth=4)
    put = store.put

    def failing(rel: str, data: bytes) -> str:
        if rel.endswith("000003.png"):
            raise OSError("No space left on device")
        return put(rel, data)

    store.put = failing
    with pytest.raises(OSError, match="No space left"):
        for n in range(6):
            frame(n)
            writer.writes.drain()  # let the queue catch up, so the failure shows on the very next frame
    assert writer.failed is not None and writer.failed[0] == 3
    with pytest.raises(OSError):
        writer.finish()
    assert store.frames_done("c", 0) == [0, 1, 2] and store.checkpoint_frames("c", 0) == [2]
