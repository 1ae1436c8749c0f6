"""The values each choice field of a spec accepts, written once: ``spec`` validates against
them and the modules that implement the choices (noise, motion, colour, the final stage) check
against the same tuples."""

NOISE_MODES = ("fixed", "incremental", "subseed", "slerp")
COLOR_MODES = ("none", "match_first", "match_frame")
WARP_INTERPOLATIONS = ("bilinear", "bicubic")  # motion.interpolation: how a latent is resampled
PADDINGS = ("reflection", "border", "zeros")  # motion.padding: what a warp shows past the edge
MOTION_MODES = ("2d", "3d")  # motion.mode: moves in the image plane, or a camera (Deforum's 3D mode)
# motion.depth: none (the picture as a plane facing the camera), a preset below, a Hugging Face repo id or
# a folder of a transformers depth estimator
DEPTH_PRESETS = {"depth-anything-v2-small": "depth-anything/Depth-Anything-V2-Small-hf"}
FRAME_INTERPOLATIONS = (1, 2, 4, 8)  # post.interpolation: frames out per frame rendered
INTERPOLATION_METHODS = ("ffmpeg", "blend", "latent")
TRANSITIONS = ("cut", "crossfade")
CODECS = ("libx264", "libx265", "libvpx-vp9", "libaom-av1", "mpeg4")
RANDOM_MODEL_NAMES = ("flux1-schnell", "flux1-schnell-full-encoders", "flux1-dev")  # model.source random:<name>
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "reduce-overhead", "max-autotune")  # cluster.compile_mode
COMPILE_SCOPES = ("blocks", "model")  # cluster.compile_scope: each repeated block compiled once, or the whole model
PRECISIONS = ("bf16", "fp8")  # model.precision: the transformer blocks' weights and matmuls
