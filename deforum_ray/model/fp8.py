"""fp8 weights and activations for the transformer's blocks (``model.precision: fp8``).

Each ``nn.Linear`` inside FLUX's double and single blocks becomes a :class:`Float8Linear`: its
weight stored in float8 e4m3 with one scale per output row (half of bf16's memory), its input
quantized per row (token) on the fly, and the product run on the GPU's fp8 tensor cores by
``torch._scaled_mm`` (fp32 accumulation, bf16 out): row-wise scaling, as torchao's float8
"dynamic row-wise" recipe. The embedders and the final projection stay in bf16: they are small
and set the scale of everything else. On a CPU the same quantized numbers are multiplied in
float32 (an emulation, for tests: the values match the GPU's up to accumulation order).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448
BLOCKS = ("transformer_blocks", "single_transformer_blocks")


def quantize_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """``x`` (rows, k) as float8 e4m3 and the float32 scale of each row: ``x ≈ q * scale``."""
    amax = x.abs().amax(dim=-1, keepdim=True).float().clamp_min(1e-12)
    scale = amax / FP8_MAX
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


class Float8Linear(nn.Module):
    """A Linear layer with float8 weights (row-wise scales) and row-wise dynamic fp8 inputs."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight, scale = quantize_rows(linear.weight.detach())
        self.register_buffer("weight", weight)  # (out, in) float8
        self.register_buffer("weight_scale", scale.t().contiguous())  # (1, out) float32
        bias = linear.bias.detach() if linear.bias is not None else None
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features)
        q, scale = quantize_rows(rows)
        if x.is_cuda:
            out = torch._scaled_mm(q, self.weight.t(), scale_a=scale, scale_b=self.weight_scale, out_dtype=x.dtype)
        else:
            out = ((q.float() * scale) @ (self.weight.float() * self.weight_scale.t()).t()).to(x.dtype)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)


def block_to_fp8(block: nn.Module) -> int:
    """Replace the Linear layers of one block by :class:`Float8Linear`, in place, one at a time
    (each bf16 weight is freed as it is replaced). Returns how many."""
    replaced = 0
    for name, module in list(block.named_modules()):
        if isinstance(module, nn.Linear) and module.in_features % 16 == 0 and module.out_features % 16 == 0:
            parent = block.get_submodule(name.rpartition(".")[0]) if "." in name else block
            setattr(parent, name.rpartition(".")[2], Float8Linear(module))
            replaced += 1
    return replaced


def to_fp8(transformer: nn.Module) -> int:
    """:func:`block_to_fp8` on every block of a transformer already on its device. Returns how many."""
    replaced = sum(block_to_fp8(block) for group in BLOCKS for block in getattr(transformer, group, []))
    if replaced and torch.cuda.is_available():
        torch.cuda.empty_cache()
    return replaced
