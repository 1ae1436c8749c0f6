"""The Ray actor: one resident model, many chains.

A :class:`FluxWorker` loads its model once and renders the chains it is given into the store, up
to ``cluster.chains_per_worker`` of them advanced together through one batched transformer call
per Euler step (:func:`~deforum_ray.frame.loop.advance`). Each chain resumes where the store says
it stands (``render.resume``) and hands its frames to a sink (``render.sinks``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import first_line
from ..frame.loop import AnchorChain, Chain, FrameOut, Lane, LoopState, SegmentChain, advance
from ..job.inputs import local_path, opened_image
from ..job.plan import ChainKind, ChainTask
from ..model.denoiser import Acceleration
from ..model.vae import accelerate_decoder, decode, encode
from ..store import RenderStore, worker_name
from .resume import ResumePoint, find_resume_point, segment_ends
from .compile_cache import FOLDER as ARTIFACTS_FOLDER, CompileArtifacts, artifact_facts
from .sinks import AnchorWriter, FrameWriter, WriteQueue
from .start import LibraryLog


class ChainError(RuntimeError):
    """A chain that failed; names the clip (and segment) and the frame it was on."""

    def __init__(self, label: str, frame: int, message: str):
        self.label, self.frame, self.message = label, frame, message
        clip, _, part = label.partition("/")
        where = "" if not part else " anchor chain" if part == ChainKind.ANCHORS.value else f" segment {part}"
        super().__init__(f"clip {clip!r}{where} failed at frame {frame}: {message}")

    def __reduce__(self):  # travels back to the driver through Ray intact
        return ChainError, (self.label, self.frame, self.message)


@dataclass(frozen=True)
class ChainJob:
    """Everything a worker needs to render one chain, besides its model and the embeddings."""

    task: ChainTask
    clip: Any  # ClipSpec
    width: int
    height: int
    store_uri: str
    storage_options: dict
    checkpoint_every: int
    fresh: bool = False
    send_latents: bool = False


@dataclass(frozen=True)
class ChainReport:
    label: str
    kind: ChainKind
    frames_rendered: int  # anchors, for an anchor chain
    seconds: float
    worker: str
    resumed_from: int | None
    advanced_together: int = 1  # the most chains this worker advanced in one batch
    attempt: int = 1  # set by the driver: 2 and up when the chain was retried (its worker died, ...)
    diffused: int = 0  # of frames_rendered, those denoised (the rest: between cadence keys)


@dataclass
class _Run:
    """One chain on a worker: its job, where it resumed, and the lane that advances it."""

    job: ChainJob
    resume: ResumePoint
    lane: Lane | None  # None: nothing left to render
    sink: Any
    together: int = 1
    diffused: int = 0

    def on_frame(self, out: FrameOut) -> None:
        self.sink(out)
        self.together = max(self.together, out.together)
        self.diffused += out.diffused


class FluxWorker:
    """Loads its model once and renders the chains it is given into the store, up to
    ``cluster.chains_per_worker`` of them advanced together through one batched forward."""

    def __init__(self, model_spec: Any, threads: int | None = None, device: str | None = None, offload: bool = False,
                 acceleration: Acceleration = Acceleration(), write_queue: int = 8, log_libraries: bool = False):
        began = time.time()
        import torch

        # A pool's worker: the libraries' warnings and notes go to the job's logs/, not the terminal.
        self.library_log = LibraryLog().install() if log_libraries else None

        from ..model.loading import load_model

        if threads:
            torch.set_num_threads(threads)  # the same on every worker: same float results everywhere
        self.name = worker_name()
        if (device is None or str(device).startswith("cuda")) and torch.cuda.is_available():
            use_expandable_segments(acceleration)
        # The transformer goes on the device after the prompts are embedded (release_text_encoders)
        # or at the first render, so T5 and the transformer never share it: a worker's peak memory.
        self.model = load_model(model_spec, device, offload=offload, defer_transformer=True)
        self.model.denoiser.accelerate(acceleration)
        accelerate_decoder(self.model, acceleration)
        self.acceleration, self.precision = acceleration, str(getattr(model_spec, "precision", "bf16"))
        self.artifacts: dict[tuple[int, int], CompileArtifacts] = {}  # frame size -> its compiled code's store
        self.writes = WriteQueue(write_queue)
        self.depth_models: dict[str, Any] = {}  # motion.depth -> DepthModel, each loaded once
        self.start_record = {"worker": self.name, "began_at": began, "load_s": round(time.time() - began, 3),
                      "compile_cache": compile_cache_state(acceleration)}

    def ready(self) -> str:
        return self.name

    def start_facts(self) -> dict[str, Any]:
        """When this worker began and how long its model took to load (the job's ``starts/``)."""
        return dict(self.start_record)

    def embed(self, texts: Sequence[str]) -> dict[str, Any]:
        from ..frame.prompts import encode_prompts

        return {text: emb.to("cpu") for text, emb in encode_prompts(self.model, texts).items()}

    def release_text_encoders(self) -> None:
        """Free the text encoders (every prompt of the job is embedded) and place the transformer."""
        self.model.release_text_encoders()
        self.model.place_transformer()

    def load_depth(self, sources: Sequence[str]) -> None:
        """Load the job's depth models (``motion.depth``) before its first chain, so a missing one
        fails the job at once with its one line, not each chain that needs it."""
        for source in sources:
            self._depth_source(source)

    def decode(self, latents: Sequence[Any]) -> list[np.ndarray]:
        """RGB frames of latents (the final stage's latent interpolation)."""
        return [decode(self.model, z) for z in latents]

    def render(self, jobs: Sequence[ChainJob], embeddings: dict[str, Any],
               progress: Any = None) -> list[ChainReport | ChainError]:
        """Render every job's chain, all advancing together; one result per job, in order: its
        report, or the ChainError it failed with (the other chains still finish)."""
        started = time.perf_counter()
        self.model.place_transformer()  # a pool that keeps its text encoders places it here
        artifacts = self._compile_artifacts(jobs[0]) if jobs else None
        results: list[ChainReport | ChainError | None] = [None] * len(jobs)
        runs: dict[int, _Run] = {}
        for i, job in enumerate(jobs):
            try:
                run = self._open(job, embeddings, progress)
            except Exception as exc:
                results[i] = ChainError(job.task.label, job.task.start, first_line(exc))
                continue
            if run.resume.state is None:
                results[i] = ChainReport(job.task.label, job.task.kind, 0, 0.0, self.name, None)
            else:
                runs[i] = run
        try:
            advance([run.lane for run in runs.values()])
        finally:
            for run in runs.values():  # Ctrl-C or an error too: what was handed over is written and logged
                try:
                    run.sink.finish()
                except Exception as exc:
                    run.lane.error = run.lane.error or exc
        for i, run in runs.items():
            task, lane = run.job.task, run.lane
            if lane.error is not None:
                frame = run.sink.failed[0] if run.sink.failed is not None else lane.state.frame
                results[i] = ChainError(task.label, frame, first_line(lane.error))
            else:
                done = _count(task, run.resume.state.frame, lane.state.frame)
                results[i] = ChainReport(task.label, task.kind, done, time.perf_counter() - started, self.name,
                                         run.resume.from_checkpoint, run.together, diffused=run.diffused)
        if artifacts is not None and runs:
            self._save_artifacts(artifacts, jobs[0])
        if jobs:
            self._keep_library_log(jobs[0])
        return results  # type: ignore[return-value]

    def _compile_artifacts(self, job: ChainJob) -> CompileArtifacts | None:
        """This frame size's compiled code in ``cluster.compile_cache`` (a store URI, or a local
        folder that a new node may copy), loaded before the first call unless Inductor's own folder
        is warm already; once per size. None when nothing is compiled or no cache is named."""
        uri = self.acceleration.compile_cache
        if not self.acceleration.compile or not uri:
            return None
        size = (job.width, job.height)
        if size not in self.artifacts:
            facts = artifact_facts(self.model.transformer, self.precision, self.acceleration.compile_scope,
                                   self.acceleration.compile_mode, self.acceleration.batch, size, self.model.device)
            artifacts = self.artifacts[size] = CompileArtifacts(uri, facts)
            problem = artifacts.load() if self.start_record["compile_cache"] != "warm" else None
            if problem is not None:
                self._say(job, problem)
        return self.artifacts[size]

    def _save_artifacts(self, artifacts: CompileArtifacts, job: ChainJob) -> None:
        try:
            artifacts.save()
        except Exception as exc:  # the frames are in the store; a cache that cannot take them is a note
            self._say(job, f"compile cache {artifacts.where()}: not saved ({first_line(exc)})")

    def _say(self, job: ChainJob, line: str) -> None:
        """One line for the user (Ray shows a worker's stderr) and the job's events."""
        import sys

        print(line, file=sys.stderr, flush=True)
        RenderStore(job.store_uri, job.storage_options).event("compile_cache", "compile-cache", line)

    def _keep_library_log(self, job: ChainJob) -> None:
        """The libraries' lines so far, in the job's ``logs/<worker>.log`` (a failure to write one
        is no failed chain)."""
        if self.library_log is None or not self.library_log.lines:
            return
        try:
            RenderStore(job.store_uri, job.storage_options).put_library_log(self.name, self.library_log.text())
        except Exception:
            pass

    def _open(self, job: ChainJob, embeddings: dict[str, Any], progress: Any) -> _Run:
        task = job.task
        store = RenderStore(job.store_uri, job.storage_options)
        resume = find_resume_point(store, task, job.fresh)
        if resume.state is None:
            return _Run(job, resume, None, None)
        chain = self._chain(job, store, embeddings, resume.state)
        if task.kind is ChainKind.ANCHORS:
            sink: Any = AnchorWriter(store, task, self.name, self.writes)
        else:
            def report(out: FrameOut) -> None:
                if progress is not None:
                    progress.frame.remote(task.clip, out.frame, out.z.cpu() if job.send_latents else None)

            sink = FrameWriter(store, task, self.model, job.checkpoint_every, self.name, self.writes, report)
        run = _Run(job, resume, None, sink)
        # Frames are decoded by the loop, the lanes of a batch in one VAE call; anchors need no picture.
        run.lane = Lane(chain, resume.state, task.stop, run.on_frame, pictures=task.kind is not ChainKind.ANCHORS)
        return run

    def _chain(self, job: ChainJob, store: RenderStore, embeddings: dict[str, Any], state: LoopState) -> Chain:
        """The loop's chain of the task's kind, with what it starts from: an init image, anchors."""
        task, clip = job.task, job.clip
        common = (self.model, clip, job.width, job.height, embeddings)
        depth = self._depth_model(clip)
        if task.kind is ChainKind.SEGMENT:
            return SegmentChain(*common, depth_model=depth, ends=segment_ends(store, task, clip.num_frames, clip.blend))
        init = None
        if clip.init_image and state.frame == 0:
            init = encode(self.model, load_image(clip.init_image, job.width, job.height))
        if task.kind is ChainKind.ANCHORS:
            return AnchorChain(*common, init, depth, anchors=task.anchors)
        return Chain(*common, init, depth)

    def _depth_model(self, clip: Any) -> Any:
        """The clip's depth model (3d with ``motion.depth`` other than none), loaded once per worker
        on the model's device, in float32 (bf16 is no faster: bench/depth.py); None for the rest."""
        return self._depth_source(clip.motion.depth) if clip.motion.mode == "3d" and clip.motion.depth != "none" else None

    def _depth_source(self, source: str) -> Any:
        if source not in self.depth_models:
            from ..model.depth import DepthModel

            self.depth_models[source] = DepthModel.load(source, self.model.device)
        return self.depth_models[source]


def use_expandable_segments(acceleration: Acceleration) -> None:
    """Let torch's CUDA allocator grow segments instead of caching many fixed ones: a worker's
    reserved memory drops by 1-2.7 GiB (bench/memory.py: bf16 27.6 -> 24.9 GiB, fp8 16.2 -> 14.1).
    Before the first CUDA allocation; never over a user's PYTORCH_CUDA_ALLOC_CONF, and not beside
    CUDA graphs (``reduce-overhead``), not measured together."""
    import os

    import torch

    if "PYTORCH_CUDA_ALLOC_CONF" not in os.environ and "reduce-overhead" not in acceleration.compile_mode:
        torch.cuda.memory._set_allocator_settings("expandable_segments:True")


def compile_cache_state(acceleration: Acceleration) -> str | None:
    """``warm`` when the compile cache folder already holds something, ``cold`` when empty or
    missing, ``store`` for artifacts in a store URI, None when nothing is compiled (the start's
    record says which the first frame met)."""
    import os

    if not acceleration.compile:
        return None
    if acceleration.compile_cache and local_path(acceleration.compile_cache) is None:
        return "store"  # artifacts in a store URI, loaded (or not) at the first render
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        folder = acceleration.compile_cache or cache_dir()  # Inductor's own rule for its default

        with os.scandir(os.path.expanduser(folder)) as entries:
            # the artifacts alone (copied in for a new node) are not Inductor's cache
            return "warm" if any(entry.name != ARTIFACTS_FOLDER for entry in entries) else "cold"
    except (OSError, ImportError):
        return "cold"


def _count(task: ChainTask, first: int, stop: int) -> int:
    """Frames (anchors, for an anchor chain) rendered between two states of a chain."""
    if task.kind is ChainKind.ANCHORS:
        return sum(1 for a in task.anchors if first <= a < stop)
    return stop - first


def load_image(uri: str, width: int, height: int) -> np.ndarray:
    """An RGB image from a path or fsspec URI, resized to the frame size."""
    import fsspec
    from PIL import Image

    with fsspec.open(uri, "rb") as handle, opened_image(handle) as opened:  # bounded pixels, as validated
        image = opened.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.LANCZOS)
    return np.asarray(image)
