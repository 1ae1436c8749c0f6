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
    rows = [{"clip": "c", "segment": 0, "frame": n, "worker": "w:1", "chains": 1, "seconds": 0.1, "timestamp": 100.0 + n,
             "gpu_peak_gib": None if n < 2 else 23.5} for n in range(3)]  # empty on a CPU worker
    store.put_runlog(rows[:2], "w:1")
    store.put_runlog(rows[2:], "w:1")
    assert store.read_runlog() == rows
    files = list((tmp_path / "job" / "runlog").glob("*.parquet"))
    assert len(files) == 2 and pq.read_table(files[0]).column_names == list(rows[0])
    assert all((f.parent / (f.name + MARKER)).exists() for f in files)
