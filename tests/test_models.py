"""The tiny model, and loading weights through the same code real FLUX.1 weights take."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from deforum_ray.model.loading import FluxModel, ModelError, build_random, build_tiny, load_model
from deforum_ray.frame.prompts import encode_prompts
from deforum_ray.frame.sampling import latent_image_ids, pack
from deforum_ray.job.spec import ModelSpec


def spec_for(source: str, transformer: str | None = None, shift: bool | None = None) -> ModelSpec:
    return ModelSpec(name="test", source=source, transformer=transformer, max_text_length=32, shift_timesteps=shift)


@pytest.fixture(scope="module")
def tiny() -> FluxModel:
    return build_tiny(seed=0)


@pytest.fixture(scope="module")
def saved_tiny(tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-flux")
    tiny.save_pretrained(folder)
    return folder


def modules(model: FluxModel):
    return {"transformer": model.transformer, "vae": model.vae,
            "text_encoder": model.text_encoder, "text_encoder_2": model.text_encoder_2}


def assert_same_weights(a: FluxModel, b: FluxModel) -> None:
    for name, module in modules(a).items():
        sa, sb = module.state_dict(), modules(b)[name].state_dict()
        assert sa.keys() == sb.keys(), name
        for key in sa:
            assert torch.equal(sa[key], sb[key]), f"{name}.{key}"


def transformer_output(model: FluxModel) -> torch.Tensor:
    emb = encode_prompts(model, ["a red fox in the snow"])["a red fox in the snow"]
    z = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model.transformer(
            hidden_states=pack(z), encoder_hidden_states=emb.tokens[None], pooled_projections=emb.pooled[None],
            timestep=torch.tensor([0.5]), img_ids=latent_image_ids(8, 8), txt_ids=torch.zeros(emb.tokens.shape[0], 3),
            return_dict=False,
        )[0]


def test_tiny_is_flux_architecture(tiny):
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5EncoderModel

    assert isinstance(tiny.transformer, FluxTransformer2DModel) and isinstance(tiny.vae, AutoencoderKL)
    assert isinstance(tiny.text_encoder, CLIPTextModel) and isinstance(tiny.text_encoder_2, T5EncoderModel)
    assert tiny.latent_channels == 16 and tiny.transformer.config.in_channels == 64
    assert tiny.device.type == "cpu" and tiny.dtype == torch.float32
    image = torch.zeros(1, 3, 64, 96)
    with torch.no_grad():
        latent = tiny.vae.encode(image).latent_dist.mode()
    assert latent.shape == (1, 16, 8, 12)  # 8x downsampling


def test_tiny_is_deterministic_and_leaves_global_rng_alone(tiny):
    state = torch.get_rng_state()
    again = build_tiny(seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    assert_same_weights(tiny, again)
    other = build_tiny(seed=1)
    assert not torch.equal(tiny.transformer.proj_out.weight, other.transformer.proj_out.weight)


def test_tinys_vae_copies_a_picture_blurred_and_its_moves(tiny):
    """A picture survives tiny's encode and decode as its 8x8-cell colours, smoothed: an init image
    shows in tiny's frames, and a latent that moves gives a picture that moves the same way."""
    import numpy as np

    from deforum_ray.model.vae import decode, encode

    y, x = np.mgrid[0:64, 0:64]
    picture = np.stack([x * 4, y * 4, np.where((x // 32 + y // 32) % 2, 200, 40)], -1).astype(np.uint8)
    z = encode(tiny, picture)
    assert z.shape == (1, 16, 8, 8)
    copy = decode(tiny, z).astype(float)
    inner = (slice(8, -8), slice(8, -8))  # away from the border, where the blur meets zero padding
    for c in range(3):  # blurred and its contrast normalised (about halved here), but the same picture
        a, b = copy[inner][..., c], picture[inner][..., c].astype(float)
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9 and abs(a.mean() - b.mean()) < 15, c
    shifted = decode(tiny, torch.roll(z, 2, dims=-1)).astype(float)  # two cells right: 16 pixels
    assert np.abs(shifted[24:40, 32:48] - copy[24:40, 16:32]).mean() < 3


def test_tiny_tokenizer_tells_prompts_apart(tiny):
    ids = tiny.tokenizer(["a lighthouse at dusk", "a lighthouse at dawn", "zyxw qvut"]).input_ids
    assert len({tuple(i) for i in ids}) == 3
    assert tiny.tokenizer.unk_token_id not in ids[2]  # unknown words fall back to letter pieces


def test_save_and_load_round_trip_bit_identical(tiny, saved_tiny):
    index = json.loads((saved_tiny / "model_index.json").read_text())
    assert index["_class_name"] == "FluxPipeline" and index["text_encoder_2"][1] == "T5EncoderModel"
    loaded = load_model(spec_for(str(saved_tiny)), device="cpu")
    assert_same_weights(tiny, loaded)
    # Loaded weights are memory-mapped from safetensors; CPU kernels pick SIMD paths by alignment,
    # so the raw output may differ in the last bits. Once copied into fresh memory it is identical.
    torch.testing.assert_close(transformer_output(loaded), transformer_output(tiny), rtol=0, atol=1e-5)
    with torch.no_grad():
        for param in loaded.transformer.parameters():
            param.data = param.data.clone()
    assert torch.equal(transformer_output(tiny), transformer_output(loaded))
    assert loaded.shift_timesteps is False  # read from the saved scheduler config
    assert load_model(spec_for(str(saved_tiny), shift=True), device="cpu").shift_timesteps is True


def test_single_file_transformer_over_a_base_folder(tiny, saved_tiny, tmp_path):
    other = build_tiny(seed=5)
    weights = tmp_path / "finetune.safetensors"
    save_file(other.transformer.state_dict(), str(weights))
    loaded = load_model(spec_for(str(saved_tiny), transformer=str(weights)), device="cpu")
    for key, value in other.transformer.state_dict().items():
        assert torch.equal(loaded.transformer.state_dict()[key], value), key
    assert torch.equal(loaded.vae.decoder.conv_out.weight, tiny.vae.decoder.conv_out.weight)  # rest from base


def test_missing_component_is_one_clear_line(saved_tiny, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "transformer").symlink_to(saved_tiny / "transformer")
    with pytest.raises(ModelError) as info:
        load_model(spec_for(str(partial)), device="cpu")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("model: cannot load vae from folder") and str(partial) in message


def test_missing_folder_and_bad_single_file(saved_tiny, tmp_path):
    with pytest.raises(ModelError, match="cannot load transformer from folder"):
        load_model(spec_for(str(tmp_path)), device="cpu")
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not safetensors at all")
    with pytest.raises(ModelError, match="is not a readable .safetensors file") as info:
        load_model(spec_for(str(saved_tiny), transformer=str(bad)), device="cpu")
    assert "\n" not in str(info.value)
    wrong = tmp_path / "wrong.safetensors"
    save_file({"some.weight": torch.zeros(2)}, str(wrong))
    with pytest.raises(ModelError, match="matches neither the diffusers layout"):
        load_model(spec_for(str(saved_tiny), transformer=str(wrong)), device="cpu")
    with pytest.raises(ModelError, match="no such file"):
        load_model(spec_for(str(saved_tiny), transformer=str(tmp_path / "nope.safetensors")), device="cpu")


def test_unreachable_repo_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never touch the network in tests
    with pytest.raises(ModelError) as info:
        load_model(spec_for("black-forest-labs/FLUX.1-schnell"), device="cpu")
    message = str(info.value)
    assert "\n" not in message and "Hugging Face repo 'black-forest-labs/FLUX.1-schnell'" in message
    assert "HF_TOKEN" in message


def test_release_text_encoders_after_embedding(saved_tiny):
    model = load_model(spec_for(str(saved_tiny)), device="cpu")
    embeddings = encode_prompts(model, ["a cat"])
    model.release_text_encoders()
    assert model.text_encoder is None and model.text_encoder_2 is None
    assert embeddings["a cat"].tokens.shape == (32, 32)
    with pytest.raises(RuntimeError, match="released"):
        encode_prompts(model, ["a dog"])


def test_random_flux1_schnell_has_flux1_schnells_shapes():
    """``random:flux1-schnell`` is the real architecture at full size (built on ``meta`` here: the
    shapes without the 24 GB); its text encoders have FLUX's widths, so the transformer reads them."""
    model = build_random("flux1-schnell", device="meta", dtype=torch.bfloat16)
    size = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    config = model.transformer.config
    assert (config.num_layers, config.num_single_layers, config.joint_attention_dim) == (19, 38, 4096)
    assert 11.8e9 < size(model.transformer) < 11.95e9  # FLUX.1-schnell: 11.9 billion
    assert 83e6 < size(model.vae) < 84.5e6 and model.vae.config.block_out_channels == (128, 256, 512, 512)
    assert model.text_encoder.config.hidden_size == 768 and model.text_encoder_2.config.d_model == 4096
    assert all(p.dtype == torch.bfloat16 for p in model.transformer.parameters())
    assert not model.guidance_embeds and not model.shift_timesteps
    full = build_random("flux1-schnell-full-encoders", device="meta")
    assert 4.6e9 < size(full.text_encoder_2) < 4.8e9  # T5-XXL's encoder
    assert torch.get_default_dtype() == torch.float32  # the builder's default dtype did not leak
    with pytest.raises(ModelError, match="unknown random model 'flux9'"):
        build_random("flux9", device="meta")


def test_fp8_blocks_hold_float8_weights_and_stay_close_to_full_precision(tiny):
    """``model.precision: fp8`` replaces the blocks' Linear layers: float8 weights with a scale per
    row, inputs quantized per row. On a CPU the product is emulated with the same numbers."""
    import copy

    from deforum_ray.model.fp8 import FP8, Float8Linear, quantize_rows, to_fp8

    x = torch.randn(5, 32, generator=torch.Generator().manual_seed(3)) * torch.logspace(-2, 2, 5)[:, None]
    q, scale = quantize_rows(x)
    assert q.dtype == FP8 and scale.shape == (5, 1)
    assert ((q.float() * scale - x).abs() <= x.abs().amax(1, keepdim=True) / 16).all()  # 3 mantissa bits, per row

    full = transformer_output(tiny)
    quantized = copy.deepcopy(tiny)
    count = to_fp8(quantized.transformer)
    layers = [m for m in quantized.transformer.modules() if isinstance(m, Float8Linear)]
    assert count == len(layers) > 0 and all(m.weight.dtype == FP8 for m in layers)
    assert not any(isinstance(m, Float8Linear) for m in quantized.transformer.x_embedder.modules())  # embedders stay
    low = transformer_output(quantized)
    relative = float((low - full).norm() / full.norm())
    assert 0 < relative < 0.1, relative


def test_fp8_is_a_model_setting_that_loads(tmp_path):
    spec = spec_for("tiny")
    spec.precision = "fp8"
    from deforum_ray.model.fp8 import Float8Linear

    model = load_model(spec, "cpu")
    assert any(isinstance(m, Float8Linear) for m in model.transformer.modules())
    assert not any(isinstance(m, Float8Linear) for m in load_model(spec_for("tiny"), "cpu").transformer.modules())


def small_meta_transformer():
    """FLUX's transformer class, small, built on the meta device (shapes, no weights)."""
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        return FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=2, num_single_layers=2,
                                      attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                      pooled_projection_dim=32, guidance_embeds=False, axes_dims_rope=(4, 6, 6))


def test_placing_a_meta_transformer_makes_seeded_weights_block_by_block():
    """``random:`` transformers are made on the device one block at a time from the model's seed:
    the same seed gives the same weights, fp8 gives the same weights quantized, and the caller's
    RNG does not move."""
    from deforum_ray.model.fp8 import Float8Linear, quantize_rows
    from deforum_ray.model.placement import Placement, place, units

    made = []
    for seed, precision in ((5, "bf16"), (5, "bf16"), (6, "bf16"), (5, "fp8")):
        transformer = small_meta_transformer()
        before = torch.random.get_rng_state()
        count = place(transformer, torch.device("cpu"), torch.float32, Placement(precision, seed))
        assert torch.equal(before, torch.random.get_rng_state())
        assert not any(p.is_meta for p in transformer.parameters())
        made.append((transformer, count))
    (a, none), (b, _), (c, _), (q, fp8) = made
    assert none == 0 and fp8 == sum(isinstance(m, Float8Linear) for m in q.modules()) > 0
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.x_embedder.weight, c.x_embedder.weight)
    names = [name for name, _ in units(a)]
    assert names.index("transformer_blocks.1") < names.index("single_transformer_blocks.0") < names.index("proj_out")
    weight, scale = quantize_rows(a.transformer_blocks[0].attn.to_q.weight)
    assert torch.equal(q.transformer_blocks[0].attn.to_q.weight, weight)  # the same bf16 weights, quantized
    assert torch.equal(q.x_embedder.weight, a.x_embedder.weight)  # the embedders stay as made
    with pytest.raises(ValueError, match="no seed"):
        place(small_meta_transformer(), torch.device("cpu"), torch.float32, Placement())


def test_a_deferred_transformer_is_placed_after_the_prompts_are_embedded(saved_tiny):
    """A worker loads its transformer off the device, embeds, frees the text encoders and only then
    places the transformer (what keeps T5-XXL and the transformer from sharing a GPU); the result
    is the model an immediate load gives, bit for bit, in bf16 and fp8."""
    from deforum_ray.render.worker import FluxWorker

    spec = spec_for(str(saved_tiny))
    worker = FluxWorker(spec, device="cpu", write_queue=0)
    assert worker.model.pending is not None and worker.model.pending.precision == "bf16"
    embeddings = worker.embed(["a red fox in the snow"])
    assert worker.model.pending is not None  # embedding did not need the transformer
    worker.release_text_encoders()
    assert worker.model.pending is None and worker.model.text_encoder_2 is None
    model, loaded = worker.model, load_model(spec, "cpu")
    assert torch.equal(embeddings["a red fox in the snow"].tokens,
                       encode_prompts(loaded, ["a red fox in the snow"])["a red fox in the snow"].tokens)
    model.text_encoder, model.text_encoder_2 = loaded.text_encoder, loaded.text_encoder_2  # for transformer_output
    assert torch.equal(transformer_output(model), transformer_output(loaded))

    spec.precision = "fp8"
    deferred = load_model(spec, "cpu", defer_transformer=True)
    assert deferred.pending.precision == "fp8"
    deferred.place_transformer()
    deferred.place_transformer()  # once only
    assert torch.equal(transformer_output(deferred), transformer_output(load_model(spec, "cpu")))
    random = load_model(spec_for("random:flux1-schnell"), "meta", torch.bfloat16, defer_transformer=True)
    assert random.pending.seed == 0 and all(p.is_meta for p in random.transformer.parameters())


def test_decoding_many_frames_splits_calls_by_pixels(tiny, monkeypatch):
    """A batch of frames is decoded in VAE calls of at most DECODE_PIXELS each (the decoder's
    activations grow with the pixels of a call), in order, each frame as decoding it alone gives."""
    import numpy as np

    from deforum_ray.model import vae

    latents = [torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(5)]
    alone = [vae.decode(tiny, z) for z in latents]
    calls: list[int] = []
    original = tiny.vae.decode
    monkeypatch.setattr(tiny.vae, "decode", lambda z, **kw: calls.append(len(z)) or original(z, **kw))
    monkeypatch.setattr(vae, "DECODE_PIXELS", 2 * 64 * 64)  # two 64x64 frames a call
    frames = vae.decode_many(tiny, latents)
    assert calls == [2, 2, 1]
    assert all(np.abs(a.astype(int) - b.astype(int)).max() <= 1 for a, b in zip(frames, alone))
    calls.clear()
    monkeypatch.setattr(vae, "DECODE_PIXELS", 64 * 64 // 2)  # less than a frame: still one a call
    assert len(vae.decode_many(tiny, latents[:2])) == 2 and calls == [1, 1]


def test_a_compiled_decoder_is_always_called_with_its_full_batch(tiny, monkeypatch):
    """A compiled decoder recompiles for each new batch shape: a short call is padded to the call
    size, and the padding never reaches a frame."""
    import numpy as np

    from deforum_ray.model import vae

    latents = [torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    alone = [vae.decode(tiny, z) for z in latents]
    calls: list[int] = []
    original = tiny.vae.decode
    monkeypatch.setattr(tiny.vae, "decode", lambda z, **kw: calls.append(len(z)) or original(z, **kw))
    monkeypatch.setattr(vae, "DECODE_PIXELS", 2 * 64 * 64)
    monkeypatch.setattr(vae, "is_compiled", lambda module: True)
    frames = vae.decode_many(tiny, latents)
    assert calls == [2, 2] and len(frames) == 3
    assert all(np.abs(a.astype(int) - b.astype(int)).max() <= 1 for a, b in zip(frames, alone))
    assert len(vae.decode_many(tiny, latents[:1])) == 1 and calls[-1] == 2


def test_a_compiled_transformer_is_always_called_with_at_least_its_batch(tiny):
    """``cluster.chains_per_worker`` is the batch a compiled worker pads every call to (one graph,
    no recompiles for a lone anchor chain or a late lane); each row's velocity is its own."""
    from types import SimpleNamespace

    from deforum_ray.model.denoiser import Acceleration, Denoiser, TextEmbedding, pad_rows

    cluster = SimpleNamespace(compile=True, compile_mode="default", compile_cache=None, chains_per_worker=3,
                              compile_scope="blocks")
    assert Acceleration.of(cluster).batch == 3
    assert torch.equal(pad_rows(torch.arange(2.0)[:, None], 4), torch.tensor([[0.0], [1.0], [1.0], [1.0]]))
    emb = encode_prompts(tiny, ["a red fox in the snow"])["a red fox in the snow"]
    plain, padded = Denoiser(tiny), Denoiser(tiny)
    padded.batch = 3
    shapes: list[int] = []
    hook = tiny.transformer.register_forward_pre_hook(lambda m, a, kw: shapes.append(kw["hidden_states"].shape[0]),
                                                      with_kwargs=True)
    try:
        for rows in (1, 2, 4):
            x = torch.randn(rows, 16, 64, generator=torch.Generator().manual_seed(rows))
            text = TextEmbedding(emb.tokens.expand(rows, *emb.tokens.shape), emb.pooled.expand(rows, *emb.pooled.shape))
            guidance = torch.full((rows,), 3.5)
            want = plain.velocity(x, 0.5, text, latent_image_ids(8, 8), guidance)
            got = padded.velocity(x, 0.5, text, latent_image_ids(8, 8), guidance)
            assert got.shape == want.shape and torch.allclose(got, want, atol=1e-5)
    finally:
        hook.remove()
    assert shapes == [1, 3, 2, 3, 4, 4]  # plain, then padded, for 1, 2 and 4 rows


def test_each_repeated_block_is_traced_once_and_reused_by_every_block_of_its_kind(tiny):
    """``cluster.compile_scope: blocks`` (the default): Dynamo traces one graph per block class (and
    input layout) and every other block reuses it, so a 57-block FLUX costs three traces. Traced
    with Dynamo's ``eager`` backend (the same tracing and guards, no code generated: seconds)."""
    from diffusers import FluxTransformer2DModel

    from deforum_ray.model.compiling import compile_module, is_compiled, transformer_regions

    config = {k: v for k, v in tiny.transformer.config.items() if not k.startswith("_")}
    transformer = FluxTransformer2DModel.from_config({**config, "num_layers": 3, "num_single_layers": 4}).eval()
    emb = encode_prompts(tiny, ["a red fox in the snow"])["a red fox in the snow"]
    inputs = dict(hidden_states=torch.randn(2, 16, 64, generator=torch.Generator().manual_seed(0)),
                  encoder_hidden_states=emb.tokens.expand(2, *emb.tokens.shape),
                  pooled_projections=emb.pooled.expand(2, *emb.pooled.shape), timestep=torch.full((2,), 0.5),
                  img_ids=latent_image_ids(8, 8), txt_ids=torch.zeros(emb.tokens.shape[0], 3),
                  guidance=torch.full((2,), 3.5) if config["guidance_embeds"] else None, return_dict=False)
    with torch.no_grad():
        want = transformer(**inputs)[0]
        keys = list(transformer.state_dict())
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        compiled = compile_module(transformer, transformer_regions(transformer), "blocks", "default", backend="eager")
        assert compiled is transformer and is_compiled(transformer) and list(transformer.state_dict()) == keys
        got = transformer(**inputs)[0]
        assert torch.equal(got, want)
        # 7 blocks, 3 graphs: the double blocks', the first single block's (its input has other
        # strides: a view of the joined text and image tokens) and the other single blocks'.
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 3
        transformer(**inputs)  # a second call at the same shapes traces nothing
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 3
        whole = compile_module(transformer, [], "model", "default", backend="eager")
        assert whole is not transformer and is_compiled(whole)
    torch._dynamo.reset()


def test_a_decoder_compiled_by_region_is_padded_and_decodes_the_same(tiny, monkeypatch):
    """The VAE decoder compiled resnet by resnet counts as compiled (its calls are padded to one
    batch, :func:`test_a_compiled_decoder_is_always_called_with_its_full_batch`) and decodes the same
    (to one level: a batch of another size sums in another order)."""
    import copy

    import numpy as np

    from deforum_ray.model import vae
    from deforum_ray.model.compiling import compile_module, decoder_regions, is_compiled

    model = copy.copy(tiny)
    model.vae = copy.deepcopy(tiny.vae)
    latents = [torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    want = vae.decode_many(model, latents)
    regions = decoder_regions(model.vae.decoder)
    assert regions and {type(r).__name__ for r in regions} <= {"ResnetBlock2D", "Attention"}
    assert not is_compiled(model.vae.decoder)
    torch._dynamo.reset()
    compile_module(model.vae.decoder, regions, "blocks", "default", backend="eager")
    assert is_compiled(model.vae.decoder)
    calls: list[int] = []
    original = model.vae.decode
    monkeypatch.setattr(model.vae, "decode", lambda z, **kw: calls.append(len(z)) or original(z, **kw))
    monkeypatch.setattr(vae, "DECODE_PIXELS", 2 * 64 * 64)
    got = vae.decode_many(model, latents)
    assert calls == [2, 2] and all(np.abs(a.astype(int) - b.astype(int)).max() <= 1 for a, b in zip(got, want))
    torch._dynamo.reset()


def test_gpu_workers_use_expandable_segments_unless_told_otherwise(monkeypatch):
    """The allocator setting that cut a worker's reserved memory by up to 2.7 GiB: on by default,
    never over the user's PYTORCH_CUDA_ALLOC_CONF, and not beside CUDA graphs."""
    from deforum_ray.model.denoiser import Acceleration
    from deforum_ray.render.worker import use_expandable_segments

    settings: list[str] = []
    monkeypatch.setattr(torch.cuda.memory, "_set_allocator_settings", settings.append)
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    use_expandable_segments(Acceleration(compile=True))
    assert settings == ["expandable_segments:True"]
    use_expandable_segments(Acceleration(compile=True, compile_mode="reduce-overhead"))
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128")
    use_expandable_segments(Acceleration())
    assert settings == ["expandable_segments:True"]
