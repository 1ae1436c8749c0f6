"""The final stage: from stored frames to the deliverables (CPU only, no model).

``finalize``: interpolation (ffmpeg minterpolate, blend, latent slerp through a decoder it is
handed), per-clip loops, cut/crossfade joins, the streamed ffmpeg encode with audio, per-clip
videos and contact sheets, and the idempotent ``final.json``. It reads the store and ``frame``'s
pure math; it never starts Ray or a model itself.
"""
