"""Prompt embeddings: each distinct prompt encoded once, then blended linearly between keyframes.

Between keyframes a and b, frame f uses ``(1 - w) * E_a + w * E_b`` with ``w = (f - a) / (b - a)``,
for both the T5 token sequence and the pooled CLIP vector, so prompts morph instead of cutting.
"""

from __future__ import annotations

import bisect
from typing import Any, Mapping, Sequence

import torch

from ..model.denoiser import TextEmbedding
from ..model.loading import CLIP_MAX_LENGTH


@torch.no_grad()
def encode_prompts(model: Any, texts: Sequence[str]) -> dict[str, TextEmbedding]:
    """Embed each distinct text once, in one batch per encoder."""
    distinct = list(dict.fromkeys(texts))
    if not distinct:
        return {}
    if model.text_encoder is None or model.text_encoder_2 is None:
        raise RuntimeError("the text encoders were released; embed every prompt before releasing them")
    # The encoders may live on the CPU (offload) while the transformer is on the GPU.
    clip_ids = model.tokenizer(distinct, padding="max_length", max_length=CLIP_MAX_LENGTH, truncation=True,
                               return_tensors="pt").input_ids.to(model.text_encoder.device)
    pooled = model.text_encoder(clip_ids, output_hidden_states=False).pooler_output
    t5_ids = model.tokenizer_2(distinct, padding="max_length", max_length=model.max_text_length, truncation=True,
                               return_tensors="pt").input_ids.to(model.text_encoder_2.device)
    tokens = model.text_encoder_2(t5_ids, output_hidden_states=False)[0]
    return {text: TextEmbedding(tokens[i].to(model.device, model.dtype), pooled[i].to(model.device, model.dtype))
            for i, text in enumerate(distinct)}


def blend_weights(keys: Sequence[int], frame: int) -> tuple[int, int, float]:
    """(index of key before, index of key after, weight of the one after) for a frame.

    Before the first key the first prompt holds; after the last, the last."""
    if frame <= keys[0]:
        return 0, 0, 0.0
    if frame >= keys[-1]:
        return len(keys) - 1, len(keys) - 1, 0.0
    hi = bisect.bisect_right(keys, frame)
    lo = hi - 1
    if keys[lo] == frame:
        return lo, lo, 0.0
    return lo, hi, (frame - keys[lo]) / (keys[hi] - keys[lo])


def embedding_at(prompts: Mapping[int, str], embeddings: Mapping[str, TextEmbedding], frame: int) -> TextEmbedding:
    keys = sorted(prompts)
    lo, hi, w = blend_weights(keys, frame)
    a = embeddings[prompts[keys[lo]]]
    if w == 0.0:
        return a
    b = embeddings[prompts[keys[hi]]]
    return TextEmbedding(torch.lerp(a.tokens, b.tokens, w), torch.lerp(a.pooled, b.pooled, w))
