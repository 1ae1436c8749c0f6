"""FLUX.1 models: presets, diffusers folders, single-file transformers, ``tiny`` and ``random:``.

Every model is loaded through :func:`load_model`; ``tiny`` is only *built* differently (random
weights from a seed, in seconds, on a CPU; ``random:flux1-schnell`` likewise at full size, on a
GPU, for benchmarks), and once saved with :meth:`FluxModel.save_pretrained`
it loads back through exactly the path real weights take. Failures become one
:class:`ModelError` line naming what was looked for and where.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import first_line
from ..job.choices import RANDOM_MODEL_NAMES
from .placement import Placement, place

if TYPE_CHECKING:
    from .denoiser import Denoiser

__all__ = ["FluxModel", "ModelError", "build_random", "build_tiny", "default_device", "load_model"]

VAE_SCALE = 8  # pixels per latent cell; packing adds 2x2 on top
CLIP_MAX_LENGTH = 77
COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "scheduler")


class ModelError(RuntimeError):
    """A model that cannot be loaded; the message is one line."""


@dataclass
class FluxModel:
    """The parts of FLUX.1 the frame loop uses, on one device in one dtype."""

    name: str
    transformer: Any
    vae: Any
    text_encoder: Any | None
    tokenizer: Any | None
    text_encoder_2: Any | None
    tokenizer_2: Any | None
    device: torch.device
    dtype: torch.dtype
    shift_timesteps: bool
    max_text_length: int
    pending: Placement | None = None  # the transformer is not on ``device`` yet: :meth:`place_transformer`

    @functools.cached_property
    def denoiser(self) -> "Denoiser":
        """The one object that calls the transformer, built once (Step 10 wraps it)."""
        from .denoiser import Denoiser

        return Denoiser(self)

    @property
    def guidance_embeds(self) -> bool:
        return bool(self.transformer.config.guidance_embeds)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    def place_transformer(self) -> None:
        """Put the transformer on the device, block by block, if loading left it off (:mod:`.placement`)."""
        if self.pending is not None:
            with quiet_libraries():
                place(self.transformer, self.device, self.dtype, self.pending)
            self.transformer.eval().requires_grad_(False)
            self.pending = None

    def release_text_encoders(self) -> None:
        """Free the text encoders once every prompt of the job is embedded (T5-XXL is ~9 GB)."""
        self.text_encoder = self.text_encoder_2 = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write a diffusers-layout folder that :func:`load_model` reads back."""
        if self.text_encoder is None or self.text_encoder_2 is None:
            raise ModelError("cannot save a model whose text encoders were released")
        from diffusers import FlowMatchEulerDiscreteScheduler

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with quiet_libraries():
            self.transformer.save_pretrained(folder / "transformer")
            self.vae.save_pretrained(folder / "vae")
            self.text_encoder.save_pretrained(folder / "text_encoder")
            self.tokenizer.save_pretrained(folder / "tokenizer")
            self.text_encoder_2.save_pretrained(folder / "text_encoder_2")
            self.tokenizer_2.save_pretrained(folder / "tokenizer_2")
            scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=self.shift_timesteps)
            scheduler.save_pretrained(folder / "scheduler")
        index = {
            "_class_name": "FluxPipeline",
            "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
            "text_encoder": ["transformers", type(self.text_encoder).__name__],
            "text_encoder_2": ["transformers", type(self.text_encoder_2).__name__],
            "tokenizer": ["transformers", type(self.tokenizer).__name__],
            "tokenizer_2": ["transformers", type(self.tokenizer_2).__name__],
            "transformer": ["diffusers", type(self.transformer).__name__],
            "vae": ["diffusers", type(self.vae).__name__],
        }
        (folder / "model_index.json").write_text(json.dumps(index, indent=2))


@contextlib.contextmanager
def quiet_libraries():
    """Silence diffusers/transformers chatter (progress bars, hints) for one load or save."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    saved = (diffusers_logging.get_verbosity(), transformers_logging.get_verbosity())
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(saved[0])
        transformers_logging.set_verbosity(saved[1])
        diffusers_logging.enable_progress_bar()
        transformers_logging.enable_progress_bar()


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA (FLUX's native precision), float32 on the CPU (bf16 matmuls are slow there)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


# ---------------------------------------------------------------------------------------------
# tiny: FLUX architecture, random weights, built from a seed

TINY_WORDS = """
a an the of in on at to with and or by from over under into through near far above below
light dark bright dim soft hard warm cold red orange yellow green blue purple pink white black
grey gold silver brown cat dog fox bird fish horse owl whale dragon robot person woman man child
tree forest flower garden field mountain hill valley river lake sea ocean wave beach island
sky cloud sun moon star night day dusk dawn sunset sunrise storm rain snow fog wind fire smoke
city street house tower castle bridge road window door lighthouse harbour harbor boat ship
painting photo photograph oil watercolor sketch studio portrait landscape cinematic detailed
quiet calm wild old new small big tiny giant ancient future space planet galaxy nebula eating
sushi food coffee tea glass stone wood metal crystal water ice leaf leaves autumn spring summer
winter morning evening glowing floating flying running sleeping dreaming
""".split()


def _tiny_tokenizer(max_length: int) -> Any:
    """A WordPiece tokenizer over TINY_WORDS with single letters as fallback pieces, so any two
    different prompts still get different token ids."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<|startoftext|>", "<|endoftext|>"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    pieces = letters + [f"##{c}" for c in letters] + list(",.!?'-:;()")
    vocab = {token: i for i, token in enumerate(dict.fromkeys(specials + pieces + sorted(set(TINY_WORDS))))}
    tok = Tokenizer(WordPiece(vocab, unk_token="<unk>", continuing_subword_prefix="##"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", bos), ("<|endoftext|>", eos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=max_length,
    )


def build_tiny(seed: int = 0, max_text_length: int = 32, device: torch.device | str | None = None,
               dtype: torch.dtype | None = None, *, defer_transformer: bool = False) -> FluxModel:
    """A FLUX-architecture model with random weights, identical for the same seed.

    Built under a forked RNG so that building it never moves the caller's global RNG. With
    ``defer_transformer`` the transformer stays in CPU memory until :meth:`FluxModel.place_transformer`.
    """
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    tokenizer = _tiny_tokenizer(CLIP_MAX_LENGTH)
    tokenizer_2 = _tiny_tokenizer(max_text_length)
    vocab_size = len(tokenizer)
    hidden = 32
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=hidden, pooled_projection_dim=hidden,
            guidance_embeds=False, axes_dims_rope=(4, 6, 6),
        )
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=16, layers_per_block=1, norm_num_groups=8,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 16, 32, 32),
            use_quant_conv=False, use_post_quant_conv=False,
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=CLIP_MAX_LENGTH, projection_dim=hidden,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ))
        text_encoder_2 = T5EncoderModel(T5Config(
            vocab_size=vocab_size, d_model=hidden, d_ff=2 * hidden, d_kv=8, num_layers=2, num_heads=4,
            pad_token_id=tokenizer_2.pad_token_id, eos_token_id=tokenizer_2.eos_token_id,
            decoder_start_token_id=tokenizer_2.pad_token_id,
        ))
        _make_tiny_vae_faithful(vae)
    model = _assemble("tiny", transformer, vae, text_encoder, tokenizer, text_encoder_2, tokenizer_2,
                      device, dtype, shift_timesteps=False, max_text_length=max_text_length)
    if not defer_transformer:
        model.place_transformer()
    return model


# ---------------------------------------------------------------------------------------------
# random:<preset>: a real FLUX.1 architecture at full size with random weights, built on the device

RANDOM_PREFIX = "random:"
# Encoders: "small" keeps FLUX's widths (CLIP-L 768, T5-XXL 4096, what the transformer reads) with
# two layers each; "full" is CLIP-L's and T5-XXL's own depth and vocabulary, so memory figures hold
# for real weights.
RANDOM_MODELS = {
    "flux1-schnell": {"guidance_embeds": False, "encoders": "small"},
    "flux1-schnell-full-encoders": {"guidance_embeds": False, "encoders": "full"},
    "flux1-dev": {"guidance_embeds": True, "encoders": "small", "shift": True},
}
assert tuple(RANDOM_MODELS) == RANDOM_MODEL_NAMES


def build_random(preset: str, seed: int = 0, max_text_length: int = 256, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, *, defer_transformer: bool = False) -> FluxModel:
    """FLUX.1 at its real size (19 + 38 blocks, 3072 wide; FLUX's VAE) with random weights, built
    straight on ``device`` in ``dtype`` (seconds on a GPU, no download), for benchmarks and
    smoke tests of a cluster. ``device="meta"`` builds the shapes alone. Tokenizers are ``tiny``'s.

    The transformer is born on the meta device and made block by block when it is placed
    (:mod:`.placement`; at once, or with ``defer_transformer`` at :meth:`FluxModel.place_transformer`),
    so fp8 never needs the bf16 transformer whole."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    if preset not in RANDOM_MODELS:
        raise ModelError(f"model.source: unknown random model {preset!r}; one of {', '.join(RANDOM_MODELS)}")
    choice = RANDOM_MODELS[preset]
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    full = choice["encoders"] == "full"
    tokenizer = _tiny_tokenizer(CLIP_MAX_LENGTH)
    tokenizer_2 = _tiny_tokenizer(max_text_length)
    saved_dtype = torch.get_default_dtype()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), device, quiet_libraries():
        torch.manual_seed(seed)
        torch.set_default_dtype(dtype)  # parameters are born in dtype: no float32 copy of 12B weights
        try:
            with torch.device("meta"):
                transformer = FluxTransformer2DModel(
                    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                    num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                    guidance_embeds=choice["guidance_embeds"], axes_dims_rope=(16, 56, 56),
                )
            vae = AutoencoderKL(
                in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2, norm_num_groups=32,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                block_out_channels=(128, 256, 512, 512), use_quant_conv=False, use_post_quant_conv=False,
                scaling_factor=0.3611, shift_factor=0.1159,
            )
            text_encoder = CLIPTextModel(CLIPTextConfig(
                vocab_size=49408 if full else len(tokenizer), hidden_size=768, intermediate_size=3072,
                num_hidden_layers=12 if full else 2, num_attention_heads=12, max_position_embeddings=CLIP_MAX_LENGTH,
                projection_dim=768, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            ))
            text_encoder_2 = T5EncoderModel(T5Config(
                vocab_size=32128 if full else len(tokenizer_2), d_model=4096, d_ff=10240, d_kv=64,
                num_layers=24 if full else 2, num_heads=64, feed_forward_proj="gated-gelu",
                pad_token_id=tokenizer_2.pad_token_id, eos_token_id=tokenizer_2.eos_token_id,
                decoder_start_token_id=tokenizer_2.pad_token_id,
            ))
        finally:
            torch.set_default_dtype(saved_dtype)
    model = _assemble(f"random:{preset}", transformer, vae, text_encoder, tokenizer, text_encoder_2, tokenizer_2,
                      device, dtype, shift_timesteps=bool(choice.get("shift")), max_text_length=max_text_length,
                      seed=seed)
    if not defer_transformer:
        model.place_transformer()
    return model


def _make_tiny_vae_faithful(vae: Any) -> None:
    """Make tiny's VAE a picture's faithful, blocky copy (a latent cell is the mean colour of its
    8x8 pixels), so that an init image, a zoom or a turn shows in tiny's frames and tests.

    Every residual branch (resnet ``conv2``, attention ``to_out``) is zeroed, so each block is the
    identity; channel changes copy channels; the encoder's downsamplers average 2x2 pixels and the
    decoder's upsamplers blur (a [1, 2, 1] kernel each way). The colour travels in three channels:
    latent channels 0-2 (the rest are zero and unread). The two group norms before the output
    convolutions make it an affine map per picture (its contrast is normalised), scaled to keep
    the SiLU after them in its near-linear range. Then, as for real FLUX (whose 0.3611 is 1/std of
    its latents), shift and scale are calibrated so encoded images have zero mean and unit variance
    (rounded, so float noise cannot change them) and an init image is not drowned by the noise.
    """
    blur = torch.tensor([1.0, 2.0, 1.0])
    blur = torch.outer(blur, blur) / 16.0
    with torch.no_grad():
        for name, module in vae.named_modules():
            if name.endswith(("conv2", "to_out.0")):
                torch.nn.init.zeros_(module.weight)
                torch.nn.init.zeros_(module.bias)
            elif name.endswith("conv_shortcut"):
                _copy_channels(module, min(module.weight.shape[:2]))
            elif name.endswith("downsamplers.0.conv"):  # stride 2 over a (0, 1, 0, 1)-padded input: taps 0-1
                _copy_channels(module, 0)
                for c in range(module.weight.shape[0]):
                    module.weight[c, c, :2, :2] = 0.25
            elif name.endswith("upsamplers.0.conv"):  # after a nearest-neighbour 2x
                _copy_channels(module, 0)
                for c in range(module.weight.shape[0]):
                    module.weight[c, c] = blur
        encoder, decoder = vae.encoder, vae.decoder
        for conv_in in (encoder.conv_in, decoder.conv_in):
            _copy_channels(conv_in, 3)
            conv_in.bias[3] = 1.0  # a constant channel in the colours' norm group steadies its statistics
        for norm, gain, bias in ((encoder.conv_norm_out, 0.25, 2.0), (decoder.conv_norm_out, 0.5, 1.0)):
            norm.weight.zero_()
            norm.bias.zero_()
            norm.weight[:3], norm.bias[:3] = gain, bias
        _copy_channels(encoder.conv_out, 3)
        encoder.conv_out.bias[vae.config.latent_channels:] = -30.0  # log-variance: the mode is the sample
        _copy_channels(decoder.conv_out, 3, scale=0.8)
        decoder.conv_out.bias.fill_(-0.85)  # SiLU's output back to about [-1, 1]
    y, x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    calibration = torch.stack([(x * 4) % 256, (y * 4) % 256, ((x // 8 + y // 8) % 2) * 255]) / 127.5 - 1.0
    with torch.no_grad():
        raw = vae.encode(calibration[None]).latent_dist.mode()[:, :3]  # the colour channels
    vae.register_to_config(shift_factor=round(float(raw.mean()), 4), scaling_factor=round(1.0 / float(raw.std()), 4))


def _copy_channels(conv: Any, channels: int, scale: float = 1.0) -> None:
    """Make ``conv`` copy its first ``channels`` input channels to the same output channels (the
    kernel's centre tap) and output zeros elsewhere."""
    torch.nn.init.zeros_(conv.weight)
    if conv.bias is not None:
        torch.nn.init.zeros_(conv.bias)
    centre = conv.weight.shape[-1] // 2
    for c in range(channels):
        conv.weight[c, c, centre, centre] = scale


def _assemble(name: str, transformer: Any, vae: Any, text_encoder: Any, tokenizer: Any, text_encoder_2: Any,
              tokenizer_2: Any, device: torch.device, dtype: torch.dtype, *, shift_timesteps: bool,
              max_text_length: int, text_device: torch.device | None = None, seed: int | None = None) -> FluxModel:
    """The parts on their devices, but the transformer: it is placed last (``pending``)."""
    with quiet_libraries():
        vae.to(device=device, dtype=dtype).eval().requires_grad_(False)
        for module in (text_encoder, text_encoder_2):
            module.to(device=text_device or device, dtype=dtype).eval().requires_grad_(False)
    return FluxModel(name, transformer, vae, text_encoder, tokenizer, text_encoder_2, tokenizer_2,
                     device, dtype, shift_timesteps, max_text_length, pending=Placement(seed=seed))


# ---------------------------------------------------------------------------------------------
# Loading real weights (and saved tiny folders)


def load_model(model_spec: Any, device: torch.device | str | None = None, dtype: torch.dtype | None = None,
               *, local_files_only: bool | None = None, offload: bool = False,
               defer_transformer: bool = False) -> FluxModel:
    """:func:`load_weights`, then the transformer placed on the device block by block in
    ``model.precision`` (fp8: :mod:`.fp8`). With ``defer_transformer`` it is placed only at
    :meth:`FluxModel.place_transformer`: a worker embeds its prompts first, so T5 and the
    transformer never share the device."""
    model = load_weights(model_spec, device, dtype, local_files_only=local_files_only, offload=offload)
    model.pending = replace(model.pending or Placement(), precision=str(getattr(model_spec, "precision", "bf16")))
    if not defer_transformer:
        model.place_transformer()
    return model


def load_weights(model_spec: Any, device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 *, local_files_only: bool | None = None, offload: bool = False) -> FluxModel:
    """Load the model a spec's ``model`` mapping names (``source`` tiny / repo id / folder,
    optional single-file ``transformer``), its transformer not yet placed (in CPU memory, or
    shapes alone for ``random:``). Raises :class:`ModelError` with one line.

    ``offload`` keeps the text encoders in CPU memory (they run once per job) so that a small GPU
    holds only the transformer and the VAE."""
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    text_device = torch.device("cpu") if offload else device
    source = str(model_spec.source)
    if (source == "tiny" or source.startswith(RANDOM_PREFIX)) and not model_spec.transformer:
        if source == "tiny":
            model = build_tiny(max_text_length=model_spec.max_text_length, device=device, dtype=dtype,
                               defer_transformer=True)
        else:
            model = build_random(source[len(RANDOM_PREFIX):], max_text_length=model_spec.max_text_length,
                                 device=device, dtype=dtype, defer_transformer=True)
        model.text_encoder.to(text_device)
        model.text_encoder_2.to(text_device)
        return model
    where = _describe_source(source)
    root, cached = _local_root(source, local_files_only)
    if local_files_only is None:
        local_files_only = cached or os.environ.get("HF_HUB_OFFLINE") == "1"
    common = {"local_files_only": local_files_only, "token": os.environ.get("HF_TOKEN")}

    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import AutoTokenizer, CLIPTextModel, T5EncoderModel

    def part(component: str, loader: Any, **kwargs: Any) -> Any:
        try:
            with quiet_libraries():
                return loader.from_pretrained(root, subfolder=component, **common, **kwargs)
        except Exception as exc:  # diffusers/transformers/hub raise a dozen kinds; the user needs one line
            raise ModelError(f"model: cannot load {component} from {where}: {first_line(exc)}") from exc

    if model_spec.transformer:
        transformer = _load_single_file_transformer(str(model_spec.transformer), root, where, dtype, common)
    else:
        transformer = part("transformer", FluxTransformer2DModel, torch_dtype=dtype)
    vae = part("vae", AutoencoderKL, torch_dtype=dtype)
    # FLUX.1's encoders: CLIP-L for the pooled vector, the T5 *encoder* for the token sequence.
    text_encoder = part("text_encoder", CLIPTextModel, dtype=dtype)
    text_encoder_2 = part("text_encoder_2", T5EncoderModel, dtype=dtype)
    tokenizer = part("tokenizer", AutoTokenizer)
    tokenizer_2 = part("tokenizer_2", AutoTokenizer)
    shift = model_spec.shift_timesteps
    if shift is None:
        shift = bool(_scheduler_config(root, common).get("use_dynamic_shifting", False))
    name = str(getattr(model_spec, "name", None) or Path(source).name)
    return _assemble(name, transformer, vae, text_encoder, tokenizer, text_encoder_2, tokenizer_2, device, dtype,
                     shift_timesteps=shift, max_text_length=int(model_spec.max_text_length), text_device=text_device)


def _load_single_file_transformer(path: str, root: str, where: str, dtype: torch.dtype, common: dict) -> Any:
    """A ``.safetensors`` transformer: diffusers-format keys load directly into the base's config;
    original BFL-format checkpoints go through diffusers' converter (``from_single_file``)."""
    from diffusers import FluxTransformer2DModel
    from safetensors import safe_open
    from safetensors.torch import load_file

    file = Path(path).expanduser()
    if not file.is_file():
        raise ModelError(f"model.transformer: no such file {path!r}")
    try:
        with safe_open(str(file), framework="pt") as handle:
            keys = set(handle.keys())
    except Exception as exc:
        raise ModelError(f"model.transformer: {path!r} is not a readable .safetensors file: {first_line(exc)}") from exc
    try:
        config = FluxTransformer2DModel.load_config(root, subfolder="transformer", **common)
    except Exception as exc:
        raise ModelError(f"model: cannot load transformer config from {where}: {first_line(exc)}") from exc
    with torch.device("meta"):
        expected = set(FluxTransformer2DModel.from_config(config).state_dict())
    if keys == expected:
        model = FluxTransformer2DModel.from_config(config)
        model.load_state_dict(load_file(str(file)), strict=True)
        return model.to(dtype)
    try:
        with quiet_libraries():
            return FluxTransformer2DModel.from_single_file(str(file), config=root, subfolder="transformer",
                                                           torch_dtype=dtype, **common)
    except Exception as exc:
        missing = len(expected - keys)
        raise ModelError(
            f"model.transformer: {path!r} matches neither the diffusers layout ({missing} of {len(expected)} "
            f"keys missing) nor an original FLUX checkpoint: {first_line(exc)}"
        ) from exc


def _scheduler_config(root: str, common: dict) -> dict:
    from diffusers import FlowMatchEulerDiscreteScheduler

    try:
        return dict(FlowMatchEulerDiscreteScheduler.load_config(root, subfolder="scheduler", **common))
    except Exception:  # no scheduler folder: assume an unshifted (schnell-style) schedule
        return {}


def _local_root(source: str, local_files_only: bool | None) -> tuple[str, bool]:
    """Where the parts load from, and whether that is on this machine: a folder as it is; a Hub
    repo from its complete cached snapshot (``fetch-model``), so that loading makes no request;
    else the repo id (downloading unless ``local_files_only``)."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        return str(folder), True
    if local_files_only is False:
        return source, False
    from .fetch import cached_snapshot

    snapshot = cached_snapshot(source)
    return (snapshot, True) if snapshot is not None else (source, False)


def _describe_source(source: str) -> str:
    path = Path(source).expanduser()
    if path.is_dir():
        return f"folder {str(path)!r}"
    return f"Hugging Face repo {source!r} (set HF_TOKEN for gated models)"
