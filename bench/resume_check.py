"""How long a re-run takes to see that a finished chain is finished, on S3 (a moto server on
127.0.0.1) and on a local folder.

    python bench/resume_check.py [--frames 600] [--size 512]

Writes one finished segment the way a worker does (PNG frames of noise, so they do not compress,
float16 latents, markers, DONE), then times, in the same run:
- baseline: downloading and verifying every frame and latent (what every re-run did before DONE
  recorded sizes, and still does for a chain that is not finished);
- find_resume_point: DONE plus two listings, no frame downloaded.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time

import numpy as np
import torch

from deforum_ray.job.plan import Segment
from deforum_ray.store import RenderStore
from deforum_ray.job.plan import ChainTask
from deforum_ray.render.resume import find_resume_point, write_done


def finished_segment(store: RenderStore, frames: int, size: int) -> Segment:
    rng = np.random.default_rng(0)
    seg = Segment("c", 0, 0, frames)
    for n in range(frames):
        store.put_tensors(store.latent_rel("c", 0, n), {"latent": torch.zeros(1, 16, size // 8, size // 8,
                                                                               dtype=torch.float16)})
        store.write_frame("c", 0, n, rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    write_done(store, "c", seg, {})
    return seg


def timed(what, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        what()
        best = min(best, time.perf_counter() - started)
    return best


def measure(name: str, store: RenderStore, frames: int, size: int) -> None:
    seg = finished_segment(store, frames, size)
    task = ChainTask("c", 0, frames, (seg,))
    rels = [rel for n in range(frames) for rel in (store.frame_rel("c", 0, n), store.latent_rel("c", 0, n))]
    full = timed(lambda: store.get_many(rels))
    fast = timed(lambda: find_resume_point(store, task))
    assert find_resume_point(store, task).state is None
    mb = sum(store.listed_sizes(d)[k] for d in ("segments/c/0/frames", "segments/c/0/latents")
             for k in store.listed_sizes(d)) / 1e6
    print(f"{name:6} {frames:>6} {mb:>8.0f} {full:>12.2f} {fast:>10.3f} {full / fast:>7.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    print(f"{'store':6} {'frames':>6} {'MB':>8} {'baseline s':>12} {'listing s':>10} {'ratio':>8}")
    with tempfile.TemporaryDirectory() as folder:
        measure("local", RenderStore(folder), args.frames, args.size)

    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="x",
                     region_name="us-east-1").create_bucket(Bucket="bench")
        options = {"key": "x", "secret": "x", "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
        measure("s3", RenderStore("s3://bench/job", options), args.frames, args.size)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
