"""The frame math: pure functions and small types over tensors, from one latent to the next.

``sampling`` (flow-matching timesteps, Euler steps, packing), ``noise`` (seeded per clip and
frame, never the global RNG), ``motion`` (latent warps), ``color`` (colour coherence),
``prompts`` (embeddings per frame) and ``loop`` (the loop state, the chain kinds' frame step and
``advance``, the one loop every render, test and bench runs). It may import ``model`` and
``job``; never the store, ``post``, ``render`` or Ray: it is testable alone and reusable.
"""
