"""Where a GPU worker's memory goes, phase by phase, as the worker runs them.

    python bench/memory.py --precision fp8 [--expandable] --out memory.json

Loads ``random:flux1-schnell-full-encoders`` (T5-XXL- and CLIP-L-sized encoders, so the figures
hold for real weights) the way a worker does (transformer deferred), embeds a prompt, frees the
encoders, places the transformer, then runs one eager transformer pass at batch 1 and 4 and VAE
decodes of 1, 2 and 4 frames at 512², printing torch's allocated and reserved GiB after each
phase and each phase's own peak (allocated above what was held before it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GIB = 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="bf16", choices=("bf16", "fp8"))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--expandable", action="store_true", help="the allocator's expandable segments")
    parser.add_argument("--out", default="memory.json")
    args = parser.parse_args()
    if args.expandable:
        torch.cuda.memory._set_allocator_settings("expandable_segments:True")

    from deforum_ray.frame.prompts import encode_prompts
    from deforum_ray.frame.sampling import latent_image_ids
    from deforum_ray.model.loading import load_model
    from deforum_ray.model.vae import decode_many

    rows: list[dict] = []

    def phase(name: str, held_before: int) -> None:
        torch.cuda.synchronize()
        row = {"phase": name, "allocated_gib": torch.cuda.memory_allocated() / GIB,
               "reserved_gib": torch.cuda.memory_reserved() / GIB,
               "phase_peak_above_gib": (torch.cuda.max_memory_allocated() - held_before) / GIB,
               "max_reserved_gib": torch.cuda.max_memory_reserved() / GIB}
        rows.append(row)
        print(json.dumps(row), flush=True)
        torch.cuda.reset_peak_memory_stats()

    spec = SimpleNamespace(source="random:flux1-schnell-full-encoders", transformer=None, max_text_length=256,
                           shift_timesteps=None, precision=args.precision)
    model = load_model(spec, "cuda", defer_transformer=True)
    phase("loaded (encoders, VAE)", 0)
    held = torch.cuda.memory_allocated()
    emb = encode_prompts(model, ["a lighthouse at dusk"])["a lighthouse at dusk"]
    phase("embedded one prompt", held)
    model.release_text_encoders()
    held = torch.cuda.memory_allocated()
    model.place_transformer()
    phase("encoders freed, transformer placed", held)

    cells = args.size // 8
    for batch in (1, 4):
        held = torch.cuda.memory_allocated()
        x = torch.randn(batch, (cells // 2) ** 2, 64, device="cuda", dtype=model.dtype)
        with torch.no_grad():
            model.transformer(hidden_states=x, encoder_hidden_states=emb.tokens[None].expand(batch, -1, -1).cuda(),
                              pooled_projections=emb.pooled[None].expand(batch, -1).cuda(),
                              timestep=torch.ones(batch, device="cuda", dtype=model.dtype),
                              img_ids=latent_image_ids(cells, cells, "cuda", model.dtype),
                              txt_ids=torch.zeros(emb.tokens.shape[0], 3, device="cuda", dtype=model.dtype),
                              return_dict=False)
        del x
        phase(f"transformer pass, batch {batch}", held)
    for batch in (1, 2, 4):
        held = torch.cuda.memory_allocated()
        decode_many(model, [torch.randn(1, 16, cells, cells) for _ in range(batch)])
        phase(f"VAE decode of {batch}", held)
    Path(args.out).write_text(json.dumps({"precision": args.precision, "expandable": args.expandable,
                                          "size": args.size, "phases": rows}, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
