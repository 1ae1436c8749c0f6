"""A job's start, phase by phase, and the libraries' noise kept off the terminal.

:class:`StartClock` times the driver's phases (Ray, the workers' model load, embedding, placing
the transformer, depth models, the first frame: compiling or reading the compile cache) and,
on a terminal, names the phase running and its seconds so far on one line; the phases are kept
with the job (``RenderStore.put_start``: ``starts/``, one object per render that started
workers) for the job's page and ``status --json``.

:class:`LibraryLog` takes what the model libraries print on a worker (Python warnings, torch's
and diffusers' log records: Dynamo's notes while compiling, deprecations) into a bounded buffer
that the worker writes to the job's ``logs/<worker>.log``, instead of the user's terminal.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from typing import Any, Iterator, TextIO

LIBRARY_LOGGERS = ("torch", "diffusers", "transformers", "py.warnings")


class StartClock:
    """Named phases of a start, timed in order; while one runs, a terminal shows it ticking."""

    def __init__(self, out: TextIO | None = None, tick: float = 0.5):
        self.out = out if out is not None and _is_terminal(out) else None
        self.tick = tick
        self.began = time.perf_counter()
        self.began_at = time.time()
        self.phases: list[dict[str, Any]] = []  # {"phase", "seconds"} in the order they ran
        self.workers: list[dict[str, Any]] = []  # what each worker says of its own start

    @contextmanager
    def phase(self, name: str, detail: str = "") -> Iterator[None]:
        """Time ``name``; on a terminal, rewrite "start: <name> <detail> 12 s" until it ends."""
        began = time.perf_counter()
        stop = threading.Event()
        ticker = None
        if self.out is not None:
            ticker = threading.Thread(target=self._tick, args=(name, detail, began, stop), daemon=True)
            ticker.start()
        try:
            yield
        finally:
            stop.set()
            if ticker is not None:
                ticker.join()
                self.out.write("\r\033[K")
                self.out.flush()
            self.phases.append({"phase": name, "seconds": round(time.perf_counter() - began, 3)})

    def add(self, name: str, seconds: float) -> None:
        """A phase timed elsewhere (the first frame, seen in the render loop)."""
        self.phases.append({"phase": name, "seconds": round(seconds, 3)})

    def elapsed(self) -> float:
        return time.perf_counter() - self.began

    def record(self) -> dict[str, Any]:
        return {"started_at": self.began_at, "seconds": round(self.elapsed(), 3), "phases": list(self.phases),
                "workers": list(self.workers)}

    def line(self) -> str:
        """One line: each phase and its seconds, then the total."""
        parts = [f"{p['phase']} {p['seconds']:.1f} s" for p in self.phases]
        return f"start: {', '.join(parts)}: the first frame {self.elapsed():.1f} s after the render began"

    def _tick(self, name: str, detail: str, began: float, stop: threading.Event) -> None:
        label = f"{name}, {detail}" if detail else name
        while not stop.wait(self.tick):
            assert self.out is not None
            self.out.write(f"\rstart: {label} {time.perf_counter() - began:.0f} s\033[K")
            self.out.flush()


def _is_terminal(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def _torch_loggers() -> list[str]:
    """The loggers torch registered (``torch._dynamo``, ``torch._inductor``, ...), if torch is imported."""
    if "torch" not in sys.modules:
        return []
    try:
        from torch._logging._internal import log_registry

        return sorted(log_registry.get_log_qnames())
    except (ImportError, AttributeError):
        return []


class LibraryLog(logging.Handler):
    """Keeps the model libraries' warnings and log records of one worker, bounded, off stderr."""

    def __init__(self, limit: int = 400):
        super().__init__(logging.INFO)
        self.limit = limit
        self.lines: list[str] = []
        self.dropped = 0
        self.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))

    def install(self) -> "LibraryLog":
        """Route Python warnings and the libraries' loggers here (this process, from now on). Call
        after torch is imported: its import gives each of its loggers a handler on stderr of its own
        (``torch._logging``), which this one replaces."""
        logging.captureWarnings(True)
        warnings.simplefilter("default")  # each distinct warning once per place, as Python's default
        self.saved: list[tuple[logging.Logger, bool, list[logging.Handler]]] = []
        for name in dict.fromkeys((*LIBRARY_LOGGERS, *_torch_loggers())):
            logger = logging.getLogger(name)
            own = [h for h in logger.handlers if type(h).__module__.startswith("torch")
                   or isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
            self.saved.append((logger, logger.propagate, own))
            for handler in own:
                logger.removeHandler(handler)
            logger.addHandler(self)
            logger.propagate = False
        return self

    def uninstall(self) -> None:
        logging.captureWarnings(False)
        for logger, propagate, own in reversed(getattr(self, "saved", [])):
            logger.removeHandler(self)
            for handler in own:
                logger.addHandler(handler)
            logger.propagate = propagate
        self.saved = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.lines) >= self.limit:
            self.dropped += 1
            return
        try:
            self.lines.append(self.format(record).replace("\n", "\n    "))
        except Exception:  # a record that cannot be formatted is not worth a worker
            self.dropped += 1

    def text(self) -> str:
        more = f"\n... {self.dropped} more lines not kept\n" if self.dropped else ""
        return "\n".join(self.lines) + ("\n" if self.lines else "") + more

