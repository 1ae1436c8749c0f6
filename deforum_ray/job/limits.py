"""Every bound on what a job spec may ask for, declared once.

A spec is data from a stranger: each parser that reads it stops at one of these, in time and
memory proportional to the limit, and its error names the limit. Each is far above real work (a
Parseq job has a prompt per frame; a Deforum schedule is a few hundred characters).
"""

from __future__ import annotations

MAX_SPEC_BYTES = 4 * 2**20  # a job file, or one key=value override
MAX_SPEC_NODES = 60_000  # YAML values once aliases are expanded: about 30,000 per-frame prompts, validated in
# ~11 s (OmegaConf merges ~0.35 ms a prompt); an alias bomb stops here
MAX_SPEC_DEPTH = 32  # mappings and lists inside each other

MAX_SCHEDULE_LENGTH = 100_000  # characters of one schedule
MAX_NESTING = 64  # parentheses, calls and unary operators in one expression
MAX_EXPRESSION_TERMS = 512  # numbers, names and operators in one expression (evaluation depth)
MAX_KEY = 10**9  # a keyframe's frame number; exact in float64

MAX_CLIP_FRAMES = 1_000_000  # frames of one clip, and of `deforum-ray schedule --frames`
MAX_JOB_FRAMES = 10_000_000  # frames of all clips of a job (~4 days of 24 fps video): planning is linear in them

MAX_IMAGE_PIXELS = 8192 * 8192  # an init image's width x height, read from its header before decoding
INPUT_TIMEOUT_S = 10.0  # validation's read of one file the spec names (an init image, the audio): a
# local file answers in milliseconds; an unreachable S3 would retry for minutes
