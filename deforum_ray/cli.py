"""Command line: ``deforum-ray <command>``.

Exit codes: 0 done; 2 bad spec or usage (one line per problem on stderr, no traceback, nothing
under ``output.uri`` created or changed); 1 failure while rendering.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from . import __version__
from .errors import first_line, printable
from .job.limits import MAX_CLIP_FRAMES
from .job.schedule import ScheduleError, parse_schedule

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process SIGTERM ended
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input: print the lines, exit 2."""

    def __init__(self, lines: Sequence[str]):
        self.lines = list(lines)
        super().__init__("\n".join(self.lines))


def _load(args: argparse.Namespace):
    from .job.spec import SpecError, load_job

    try:
        return load_job(args.spec, args.overrides)
    except SpecError as exc:
        count = len(exc.errors)
        summary = f"deforum-ray: {args.spec}: {count} error{'s' if count != 1 else ''} in the spec; nothing was rendered"
        raise UsageError([*exc.errors, summary]) from None


def _cmd_schedule(args: argparse.Namespace) -> int:
    """Print each frame's value so a schedule can be checked before any GPU time is spent."""
    try:
        values = parse_schedule(args.text, args.frames, seed=args.seed)
    except ScheduleError as exc:
        raise UsageError([f"deforum-ray: error: {exc}"]) from None
    width = len(str(args.frames - 1))
    for frame, value in enumerate(values):
        sys.stdout.write(f"{frame:>{width}}  {value:.6g}\n")
    return EXIT_OK


def _cmd_validate(args: argparse.Namespace) -> int:
    spec = _load(args)
    print(
        f"ok: {args.spec}: {len(spec.clips)} clip{'s' if len(spec.clips) != 1 else ''}, "
        f"{spec.total_frames} frames, model {spec.model.name}, {spec.width}x{spec.height}"
    )
    return EXIT_OK


def _cmd_plan(args: argparse.Namespace) -> int:
    from .job.plan import format_plan, plan
    from .job.spec import spec_to_yaml

    spec = _load(args)
    print(format_plan(plan(spec), spec))
    if args.show:
        print("\nresolved spec:\n")
        print(spec_to_yaml(spec).rstrip())
    return EXIT_OK


_SIGNALLED: list[int] = []  # SIGTERM, once it stopped the render (the interrupt may reach us re-raised by Ray)


def _raise_terminated(signum: int, frame: object) -> None:
    """SIGTERM (a scheduler stopping the job, ``kill``): unwound exactly as Ctrl-C is."""
    _SIGNALLED.append(signum)
    raise KeyboardInterrupt()


def _cmd_render(args: argparse.Namespace) -> int:
    specs, overrides = _render_targets(args.words)
    args.overrides = overrides
    if len(specs) == 1:
        args.spec = specs[0]
        spec = _load(args)  # every check happens before any model work or any write
        return _until_stopped(lambda: _render_one(args, spec))
    jobs = _load_queue(specs, overrides)  # every spec of the queue, before any model loads
    return _until_stopped(lambda: _render_queue(args, jobs))


def _render_targets(words: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split ``render``'s words into spec files (a folder gives its *.yaml, a glob its matches, in
    name order) and ``key=value`` overrides (applied to every spec)."""
    import glob
    from pathlib import Path

    specs: list[str] = []
    overrides: list[str] = []
    for word in words:
        path = Path(word)
        if "=" in word and not path.exists():
            overrides.append(word)
        elif path.is_dir():
            found = sorted(str(p) for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
            if not found:
                raise UsageError([f"deforum-ray: no job specs (*.yaml) in {word}"])
            specs += found
        elif glob.has_magic(word) and not path.exists():
            found = sorted(glob.glob(word))
            if not found:
                raise UsageError([f"deforum-ray: no job spec matches {word}"])
            specs += found
        else:
            specs.append(word)
    if not specs:
        raise UsageError(["deforum-ray: render: give a job spec, e.g. deforum-ray render jobs/demo.yaml"])
    return specs, overrides


def _load_queue(specs: Sequence[str], overrides: Sequence[str]) -> list[Any]:
    from .render.queue import QueuedJob

    jobs, lines, bad = [], [], 0
    for path in specs:
        try:
            jobs.append(QueuedJob(path, _load(argparse.Namespace(spec=path, overrides=list(overrides)))))
        except UsageError as exc:
            lines += exc.lines
            bad += 1
    addresses = {job.spec.cluster.address for job in jobs}
    if len(addresses) > 1:
        lines.append(f"cluster.address: the jobs of a queue run on one cluster, got {sorted(map(str, addresses))}")
        bad += 1
    if lines:
        raise UsageError([*lines, f"deforum-ray: {bad} of {len(specs)} specs are bad; nothing was rendered"])
    return jobs


def _until_stopped(run: Any) -> int:
    """``run()``, with SIGTERM (a scheduler stopping the job, ``kill``) unwound as Ctrl-C is: one line."""
    import signal

    _SIGNALLED.clear()
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread (an embedding program): its own handling stays
        previous = None
    try:
        return run()
    except KeyboardInterrupt:
        if _SIGNALLED:
            print("deforum-ray: stopped (SIGTERM); finished work is kept: the same command resumes", file=sys.stderr)
            return EXIT_TERMINATED
        print("deforum-ray: interrupted; the store is consistent: run the same command again to resume",
              file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _render_one(args: argparse.Namespace, spec: Any) -> int:
    from .render.cluster import ClusterUnreachable
    from .render.driver import JobConflict, render

    try:
        result = render(spec, progress=not args.no_progress, fresh=args.fresh)
    except JobConflict as exc:
        raise UsageError([str(exc), f"deforum-ray: {args.spec}: nothing was rendered"]) from None
    except ClusterUnreachable as exc:
        print(f"deforum-ray: {exc}; nothing was rendered", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # a failed render is one line (exit 1); --debug shows the traceback
        if args.debug:
            raise
        print(f"deforum-ray: render failed: {first_line(exc)} (what finished is kept; the same command resumes)",
              file=sys.stderr)
        return EXIT_FAILED
    if not args.no_progress:
        print(result.summary(), file=sys.stderr)
    resumed = f" ({result.resumed} already done)" if result.resumed else ""
    print(f"rendered {result.frames} frames{resumed} in {result.seconds:.1f} s into {result.output_dir}",
          file=sys.stderr)
    if result.retried:
        print(f"retried from their checkpoints: {', '.join(result.retried)}", file=sys.stderr)
    print(result.video)  # the last line of stdout: scripts read the video's path from it
    return EXIT_OK


def _render_queue(args: argparse.Namespace, jobs: Sequence[Any]) -> int:
    from .render.cluster import ClusterUnreachable
    from .render.queue import queue_table, render_queue

    try:
        outcomes = render_queue(jobs, progress=not args.no_progress, fresh=args.fresh)
    except ClusterUnreachable as exc:
        print(f"deforum-ray: {exc}; nothing was rendered", file=sys.stderr)
        return EXIT_FAILED
    print(queue_table(outcomes))
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        print(f"deforum-ray: {len(failed)} of {len(outcomes)} jobs failed ({', '.join(o.label for o in failed)}); "
              "what finished is kept: the same command resumes them", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    """What each job folder holds; reads only, unless ``--verify`` finds damage to un-finish."""
    from .status import StatusError, find_jobs, format_status, job_status, status_record, verify

    try:
        stores = find_jobs(args.output, read_only=not (args.verify or args.html))
    except Exception as exc:
        raise UsageError([f"deforum-ray: cannot read {args.output}: {first_line(exc)}"]) from None
    if not stores:
        raise UsageError([f"deforum-ray: no deforum-ray job under {args.output}"])
    damaged: list[dict[str, Any]] = []
    reports, records, pages = [], [], []
    for store in stores:
        if args.verify:
            for item in verify(store, _verify_progress(store.url())):
                damaged.append({"object": store.url(item.rel), "problem": item.problem, "unfinished": list(item.unfinished)})
                undone = f"; un-finished {', '.join(item.unfinished)}" if item.unfinished else ""
                print(f"damaged: {store.url(item.rel)}: {item.problem}{undone}", file=sys.stderr)
        try:
            status = job_status(store)
        except StatusError as exc:
            print(f"deforum-ray: {exc}", file=sys.stderr)
            return EXIT_FAILED
        reports.append(format_status(status))
        records.append(status_record(status))
        if args.html:
            pages.append((store, status))
    if args.html:
        _write_pages(args.output, pages)
    if args.json:
        print(json.dumps({"jobs": records, "damaged": damaged}, indent=2))
    else:
        print("\n\n".join(reports))
    if damaged:
        print(f"deforum-ray: {len(damaged)} damaged object{'s' if len(damaged) != 1 else ''}; the same render command "
              "repairs them", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _write_pages(output: str, pages: list) -> None:
    """Each job's page, and the index of a folder of jobs (OUTPUT not itself a job folder)."""
    from .post.report import write_index, write_report
    from .store import RenderStore

    for store, _ in pages:
        print(f"page {write_report(store)}", file=sys.stderr)
    parent = RenderStore(output)
    if len(pages) > 1 or pages[0][0].uri != parent.uri:
        jobs = [(store.uri.rsplit("/", 1)[-1], status) for store, status in pages]
        print(f"index {write_index(parent, jobs)}", file=sys.stderr)


def _verify_progress(label: str):
    """A progress bar on stderr while ``status --verify`` reads a job's objects."""
    from tqdm import tqdm

    bar = tqdm(total=0, desc=f"verifying {label}", unit="obj", leave=False, disable=not sys.stderr.isatty())

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


def _cmd_import(args: argparse.Namespace) -> int:
    """A Deforum settings file or Parseq manifest -> a job spec that validates (nothing rendered)."""
    import os
    import secrets
    import tempfile
    from pathlib import Path

    from .job.importers import ImportProblem, import_file, imported_yaml
    from .job.spec import SpecError, load_job

    model = {"model": args.model} if args.model else {}
    try:  # the model's steps set the least strength that runs a step
        steps = load_job({"name": "probe", "num_frames": 1, "prompts": {0: "."}, **model}, check_paths=False).steps
    except SpecError as exc:
        raise UsageError(exc.errors) from None
    try:
        imported = import_file(args.file, random_seed=lambda: secrets.randbelow(2**32), steps=steps)
    except ImportProblem as exc:
        raise UsageError([f"deforum-ray import: {printable(str(exc))}"]) from None
    imported.job = {"name": imported.job["name"], **model, **{k: v for k, v in imported.job.items() if k != "name"}}
    target = Path(args.output or Path("jobs") / f"{imported.job['name']}.yaml")
    if target.exists() and not args.force:
        raise UsageError([f"deforum-ray import: {target} exists; give --force to replace it, or -o another file"])
    try:
        text = imported_yaml(imported, args.file, f"deforum-ray job spec ({__version__})")
    except ImportProblem as exc:
        raise UsageError([f"deforum-ray import: {printable(str(exc))}"]) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and validated there (relative paths resolve alike), then renamed
    # into place: a spec that would not validate never replaces anything.
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".yaml", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        try:
            spec = load_job(temporary, check_paths=False)
        except SpecError as exc:  # the importer's fault, not the user's: say so
            print("\n".join([*exc.errors, f"deforum-ray import: the imported spec does not validate (a bug); "
                              f"{target} was not written"]), file=sys.stderr)
            return EXIT_FAILED
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    for note in imported.notes:  # a stranger's text: one line each, no terminal escapes
        print(printable(note))
    unused = f"; {len(imported.unused)} settings of other tools not used (listed in its header)" if imported.unused else ""
    print(f"wrote {target}: {imported.kind}, {spec.total_frames} frames, {len(spec.clips[0].prompts)} prompts"
          f"{unused}. Next: deforum-ray plan {target}")
    return EXIT_OK


def _cmd_fetch_model(args: argparse.Namespace) -> int:
    from .job.choices import DEPTH_PRESETS
    from .job.spec import SpecError, model_presets, preset_model
    from .model.fetch import ModelAccessError
    from .model.loading import ModelError

    depth = args.depth or args.model in DEPTH_PRESETS
    try:
        preset = None if depth else preset_model(args.model)
    except SpecError as exc:
        raise UsageError(exc.errors) from None
    source = str(preset["source"]) if preset else DEPTH_PRESETS.get(args.model, args.model)
    if preset is None and "/" not in source and source != "tiny" and not source.startswith("random:"):
        raise UsageError([f"deforum-ray fetch-model: {source!r} is no model preset ({', '.join(model_presets())}), "
                          f"depth preset ({', '.join(DEPTH_PRESETS)}), Hugging Face repo id (owner/name) or folder"])
    if args.all_nodes:
        return _fetch_on_every_node(source, args, depth)
    from .model.fetch import fetch_model

    try:
        result = fetch_model(source, progress=not args.no_progress, depth=depth)
    except ModelAccessError as exc:
        raise UsageError([str(exc)]) from None
    except ModelError as exc:
        print(f"deforum-ray: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(result.line())
    return EXIT_OK


def _fetch_on_every_node(source: str, args: argparse.Namespace, depth: bool = False) -> int:
    from tqdm import tqdm

    from .model.fetch import ModelAccessError
    from .render.cluster import ClusterUnreachable
    from .render.prefetch import NodeFetch, fetch_on_every_node

    bar = tqdm(desc=f"fetch {source}", unit="node", disable=args.no_progress, file=sys.stderr)

    def done(fetched: NodeFetch, nodes: int) -> None:
        bar.total = nodes
        bar.update(1)
        if not args.no_progress:
            bar.write(fetched.line(), file=sys.stderr)

    try:
        fetched = fetch_on_every_node(source, args.address, on_done=done, depth=depth)
    except ClusterUnreachable as exc:
        raise UsageError([str(exc)]) from None
    finally:
        bar.close()
    failed = [f for f in fetched if f.error is not None]
    for f in fetched:
        print(f.line())
    if failed and all(isinstance(f.error, ModelAccessError) for f in failed):
        return EXIT_USAGE
    return EXIT_FAILED if failed else EXIT_OK


def _add_spec_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="job spec YAML, e.g. jobs/demo.yaml")
    parser.add_argument(
        "overrides", metavar="KEY=VALUE", nargs="*",
        help="overrides merged last, e.g. seed=7 clips.0.num_frames=48 'motion.zoom=\"0:(1.0), 60:(1.1)\"'",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deforum-ray",
        description="Distributed batch renderer for Deforum-style FLUX.1 animations on Ray.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    validate = commands.add_parser("validate", help="check a job spec completely, touching nothing")
    _add_spec_args(validate)
    validate.set_defaults(run=_cmd_validate)

    plan = commands.add_parser("plan", help="show what a job will render: clips, segments, passes")
    _add_spec_args(plan)
    plan.add_argument("--show", action="store_true", help="also print the resolved spec")
    plan.set_defaults(run=_cmd_plan)

    render = commands.add_parser("render", help="render a job, or a queue of jobs one after another; prints the "
                                 "video's path (a queue: a table of its jobs)",
                                 usage="deforum-ray render [-h] [--no-progress] [--fresh] [--debug] "
                                       "SPEC [SPEC ...] [KEY=VALUE ...]")
    render.add_argument("words", metavar="SPEC|KEY=VALUE", nargs="+",
                        help="job spec YAML files, folders of them or globs, rendered in order on the same workers; "
                             "KEY=VALUE overrides apply to every one")
    render.add_argument("--no-progress", action="store_true", help="no progress bar")
    render.add_argument("--fresh", action="store_true",
                        help="render from scratch, even over an earlier render of this job name")
    render.add_argument("--debug", action="store_true", help="show the full traceback when rendering fails")
    render.set_defaults(run=_cmd_render)

    status = commands.add_parser("status", help="progress of a job folder (or of every job under an output URI)")
    status.add_argument("output", metavar="OUTPUT", help="job folder or output.uri: a path, s3://bucket/prefix, ...")
    status.add_argument("--verify", action="store_true",
                        help="read every stored object and check its hash; un-finish what is damaged (exit 1) so "
                             "that the next render repairs it")
    status.add_argument("--json", action="store_true",
                        help="print {jobs: [...], damaged: [...]} as JSON on stdout (for cron and dashboards)")
    status.add_argument("--html", action="store_true",
                        help="write each job's page (report.html in its folder, also while it renders) and, for an "
                             "output URI of several jobs, index.html there")
    status.set_defaults(run=_cmd_status)

    importer = commands.add_parser(
        "import", help="turn a classic Deforum settings file or a Parseq manifest into a job spec",
        description="Read a Deforum settings file (the JSON the A1111 extension saves, .txt or .json) or a Parseq "
                    "manifest and write a job spec that validate accepts; one line per setting not carried over "
                    "as it was. Nothing is rendered.")
    importer.add_argument("file", metavar="FILE", help="settings file or Parseq manifest")
    importer.add_argument("-o", "--output", metavar="SPEC", help="where to write the spec (default jobs/<name>.yaml)")
    importer.add_argument("--force", action="store_true", help="replace an existing spec")
    importer.add_argument("--model", metavar="PRESET", help="the model preset the spec names (default: conf's)")
    importer.set_defaults(run=_cmd_import)

    fetch = commands.add_parser(
        "fetch-model", help="download a model into this node's Hugging Face cache (or every node's), so renders "
                            "load it offline",
        description="Download what a render loads (the diffusers folders; a depth model's transformers files) "
                    "into the HF cache ($HF_HOME) once; workers then load it with local_files_only. Gated models "
                    "need HF_TOKEN.")
    fetch.add_argument("model", metavar="PRESET|REPO|FOLDER",
                       help="a model preset (flux1-schnell) or depth preset (depth-anything-v2-small), a Hugging "
                            "Face repo id or a local diffusers folder")
    fetch.add_argument("--depth", action="store_true",
                       help="REPO is a depth model for motion.depth (a transformers depth estimator); implied by "
                            "a depth preset")
    fetch.add_argument("--all-nodes", action="store_true",
                       help="fetch on every node of the running cluster (--address, else RAY_ADDRESS), one task "
                            "per node")
    fetch.add_argument("--address", default=None, help="the cluster for --all-nodes (default: RAY_ADDRESS)")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bar")
    fetch.set_defaults(run=_cmd_fetch_model)

    schedule = commands.add_parser(
        "schedule",
        help="print a Deforum schedule's value on every frame",
        description='Preview a schedule, e.g. deforum-ray schedule "0:(1.0), 60:(1.1)" --frames 61',
    )
    schedule.add_argument("text", help='schedule string, e.g. "0:(1.0), 60:(1 + 0.1*sin(t/10))"')
    schedule.add_argument("--frames", type=_positive_int, required=True, help="number of frames")
    schedule.add_argument("--seed", type=int, default=0, help="value of s in expressions (default 0)")
    schedule.set_defaults(run=_cmd_schedule)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    if value > MAX_CLIP_FRAMES:
        raise argparse.ArgumentTypeError(f"at most {MAX_CLIP_FRAMES} frames (a clip's limit), got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may stand after options too (`plan x.yaml --show seed=3`): argparse leaves those over.
    args, extra = parser.parse_known_args(argv)
    words = hasattr(args, "words")  # render: specs and overrides alike
    stray = [word for word in extra
             if word.startswith("-") or not (words or ("=" in word and hasattr(args, "overrides")))]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        if words:
            args.words = [*args.words, *extra]
        else:
            args.overrides = [*args.overrides, *extra]
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.run(args)
    except UsageError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `deforum-ray schedule ... | head` is fine
        return EXIT_OK
    except KeyboardInterrupt:
        print("deforum-ray: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
