"""The model: FLUX.1 weights loaded once per worker, and the one place they are called.

``loading`` (presets, diffusers folders, single ``.safetensors`` transformer files, the
in-process ``tiny`` model), ``denoiser`` (the transformer's velocity for a batch: where
compile, fp8 and CUDA graphs wrap it) and ``vae`` (latent <-> RGB). It may import ``job``'s
types and ``errors``; nothing that renders, stores or schedules.
"""
