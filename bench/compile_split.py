"""Where a worker's first compiled frame goes: the transformer's calls and the VAE decoder's.

    python bench/compile_split.py --out split.json [--model flux1-schnell-random] [--precision fp8]
                                  [--size 512] [--batch 4] [--cache DIR]

One FluxWorker in this process (no Ray), compiled by block, renders a few frames of one clip
(``render.local``); every transformer call (``Denoiser.velocity``) and every VAE decode is
timed on its own, the device synchronised around it. The first of each pays its compile (cold
with an empty ``--cache``, warm with one a run before filled); the later ones are the steady
cost. Run it twice on one cache folder for the warm figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from deforum_ray.job.spec import load_job  # noqa: E402
from deforum_ray.render.local import render_local  # noqa: E402
from deforum_ray.render.worker import FluxWorker  # noqa: E402
from deforum_ray.model.compiling import decoder_regions  # noqa: E402
from deforum_ray.model.denoiser import Acceleration  # noqa: E402


def timed(calls: list[float], function):
    def wrapper(*args, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        began = time.perf_counter()
        out = function(*args, **kwargs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        calls.append(round(time.perf_counter() - began, 4))
        return out
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="flux1-schnell-random")
    parser.add_argument("--precision", default="fp8")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--cache", default=None, help="Inductor's cache folder (default: a new, empty one)")
    parser.add_argument("--decoder", default="static", choices=("static", "dynamic", "eager"),
                        help="the VAE decoder's resnets compiled with static shapes (as a worker does), with "
                             "dynamic ones (one graph per resnet's channels, any resolution), or not at all")
    parser.add_argument("--out", default="split.json")
    args = parser.parse_args()
    cache = args.cache or tempfile.mkdtemp(prefix="inductor-")
    out = tempfile.mkdtemp(prefix="split-")
    spec = load_job({"name": "split", "model": args.model, "width": args.size, "height": args.size,
                     "clips": [{"name": "a", "num_frames": args.frames, "prompts": {0: "a lighthouse"}}]},
                    [f"model.precision={args.precision}", f"output.uri={out}", "cluster.compile=true",
                     f"cluster.chains_per_worker={args.batch}"])
    began = time.perf_counter()
    worker = FluxWorker(spec.model, acceleration=Acceleration(True, "default", cache, args.batch, "blocks"))
    loaded = time.perf_counter() - began
    for region in decoder_regions(worker.model.vae.decoder):
        if args.decoder == "eager":
            region._compiled_call_impl = None
        elif args.decoder == "dynamic":
            region.compile(mode="default", dynamic=True)
    transformer: list[float] = []
    decoder: list[float] = []
    worker.model.denoiser.velocity = timed(transformer, worker.model.denoiser.velocity)
    worker.model.vae.decode = timed(decoder, worker.model.vae.decode)
    began = time.perf_counter()
    render_local(worker, spec, "a", f"{out}/job")
    row = {"decoder": args.decoder, "model": args.model, "precision": args.precision, "size": args.size, "batch": args.batch,
           "cache": cache, "load_s": round(loaded, 3), "render_s": round(time.perf_counter() - began, 3),
           "transformer_first_s": transformer[0], "transformer_next_s": transformer[1:4],
           "transformer_calls": len(transformer), "decoder_first_s": decoder[0], "decoder_next_s": decoder[1:4],
           "decoder_median_next_s": sorted(decoder[1:])[len(decoder[1:]) // 2] if len(decoder) > 1 else None,
           "transformer_median_next_s": sorted(transformer[1:])[len(transformer[1:]) // 2] if len(transformer) > 1 else None,
           "decoder_calls": len(decoder)}
    print(json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
