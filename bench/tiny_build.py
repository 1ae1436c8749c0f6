"""How long the tiny model takes to build, save and load on this machine (CPU).

    python bench/tiny_build.py [--repeat 3]

Run in a fresh process: the first figure includes importing torch/diffusers/transformers, as a
user's first `deforum-ray render` with `model: tiny` pays it.
"""

from __future__ import annotations

import argparse
import tempfile
import time

t_start = time.perf_counter()
import torch  # noqa: E402

from deforum_ray.model.loading import build_tiny, load_model  # noqa: E402
from deforum_ray.job.spec import ModelSpec  # noqa: E402

t_imported = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"imports            {t_imported - t_start:6.2f} s   torch {torch.__version__}, {torch.get_num_threads()} threads")
    builds = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        model = build_tiny(seed=0, device="cpu")
        builds.append(time.perf_counter() - t)
    print(f"build_tiny         {min(builds):6.2f} s   (best of {args.repeat}; first {builds[0]:.2f} s)")
    params = sum(p.numel() for m in (model.transformer, model.vae, model.text_encoder, model.text_encoder_2)
                 for p in m.parameters())
    with tempfile.TemporaryDirectory() as folder:
        t = time.perf_counter()
        model.save_pretrained(folder)
        print(f"save_pretrained    {time.perf_counter() - t:6.2f} s")
        t = time.perf_counter()
        load_model(ModelSpec(name="tiny", source=folder, transformer=None, max_text_length=32, shift_timesteps=None),
                   device="cpu")
        print(f"load_model         {time.perf_counter() - t:6.2f} s")
    print(f"parameters         {params:,}")
    print(f"first build incl. imports: {t_imported - t_start + builds[0]:.2f} s (target < 10 s)")


if __name__ == "__main__":
    main()
