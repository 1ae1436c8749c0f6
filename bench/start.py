"""Where a render's start goes, piece by piece, each in a fresh process as a job's would be.

    python bench/start.py --out start.json [--model flux1-schnell-random] [--precision fp8]

- ``ray``: ``import ray`` and ``ray.init()`` as the driver starts an embedded Ray (no dashboard),
  then an empty actor's first call (a worker process's start), then ``ray.shutdown()``;
- ``worker``: what ``FluxWorker.__init__`` does, in order: ``import torch``, CUDA's context, the
  model libraries' import (diffusers, transformers), the model's build or load (deferred
  transformer), the transformer placed (fp8: quantised block by block).

Each figure is wall seconds from the step before; the JSON keeps them all.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RAY = r"""
import json, time
t = [("start", time.perf_counter())]
import ray
t.append(("import ray", time.perf_counter()))
ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="WARNING")
t.append(("ray.init", time.perf_counter()))

@ray.remote
class Empty:
    def ping(self):
        return 1

ray.get(Empty.remote().ping.remote())
t.append(("first actor call", time.perf_counter()))
ray.shutdown()
t.append(("ray.shutdown", time.perf_counter()))
print(json.dumps({name: round(b - a, 3) for (_, a), (name, b) in zip(t, t[1:])}))
"""

WORKER = r"""
import json, sys, time
t = [("start", time.perf_counter())]
import torch
t.append(("import torch", time.perf_counter()))
torch.cuda.init(); torch.zeros(1, device="cuda")
t.append(("CUDA context", time.perf_counter()))
import diffusers, transformers
from diffusers import AutoencoderKL, FluxTransformer2DModel
from transformers import T5EncoderModel, CLIPTextModel
t.append(("import diffusers, transformers", time.perf_counter()))
sys.path.insert(0, sys.argv[1])
from deforum_ray.job.spec import load_job
from deforum_ray.model.denoiser import Acceleration
from deforum_ray.model.loading import load_model
t.append(("import deforum_ray", time.perf_counter()))
spec = load_job({"name": "s", "model": sys.argv[2], "clips": [{"name": "a", "num_frames": 2, "prompts": {0: "x"}}]},
                [f"model.precision={sys.argv[3]}"])
model = load_model(spec.model, None, defer_transformer=True)
torch.cuda.synchronize()
t.append(("model built, transformer deferred", time.perf_counter()))
model.release_text_encoders()
model.place_transformer()
torch.cuda.synchronize()
t.append(("transformer placed", time.perf_counter()))
print(json.dumps({name: round(b - a, 3) for (_, a), (name, b) in zip(t, t[1:])}))
"""


def timed(code: str, *args: str) -> dict:
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-3:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="flux1-schnell-random")
    parser.add_argument("--precision", default="fp8")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each (the first pays the disk cache)")
    parser.add_argument("--out", default="start.json")
    args = parser.parse_args()
    rows = []
    for i in range(args.repeat):
        rows.append({"run": i, "ray": timed(RAY), "worker": timed(WORKER, str(ROOT), args.model, args.precision)})
        print(json.dumps(rows[-1]), flush=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
