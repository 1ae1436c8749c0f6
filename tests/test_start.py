"""A job's start shown as it happens and kept with the job; the libraries' noise kept off the terminal."""

from __future__ import annotations

import io
import logging
import time
import warnings

from deforum_ray.render.start import LibraryLog, StartClock
from deforum_ray.store import RenderStore


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_sees_the_running_phase_tick_and_the_record_keeps_each_phase():
    terminal = Terminal()
    clock = StartClock(terminal, tick=0.05)
    with clock.phase("workers", "loading tiny on 1 worker"):
        time.sleep(0.3)
    with clock.phase("embed"):
        pass
    clock.add("first frame (compiling, cold cache)", 1.25)
    shown = terminal.getvalue()
    assert "\rstart: workers, loading tiny on 1 worker 0 s" in shown and shown.endswith("\r\033[K")
    record = clock.record()
    assert [p["phase"] for p in record["phases"]] == ["workers", "embed", "first frame (compiling, cold cache)"]
    assert 0.3 <= record["phases"][0]["seconds"] < 2 and record["phases"][2]["seconds"] == 1.25
    assert clock.line().startswith("start: workers 0.3 s, embed 0.0 s, first frame (compiling, cold cache) 1.2 s: ")


def test_a_log_file_or_pipe_gets_no_ticking():
    piped = io.StringIO()  # cron's log, ray job logs: not a terminal
    clock = StartClock(piped, tick=0.01)
    with clock.phase("ray", "starting"):
        time.sleep(0.05)
    assert piped.getvalue() == "" and clock.record()["phases"][0]["phase"] == "ray"


def test_starts_are_kept_one_object_each_and_a_damaged_one_is_left_out(tmp_path):
    store = RenderStore(str(tmp_path / "job"))
    first = {"started_at": 100.0, "seconds": 3.0, "phases": [{"phase": "ray", "seconds": 1.0}], "workers": []}
    second = {**first, "started_at": 200.0}
    store.put_start(second)
    store.put_start(first)
    store.put("starts/zz-bad.json", b"{not json")
    store.put("starts/zz-list.json", b"[1, 2]")
    assert store.starts() == [first, second]


def test_library_warnings_and_log_records_go_to_the_log_not_the_terminal(capsys):
    dynamo = logging.getLogger("torch._dynamo")
    before = (dynamo.propagate, set(dynamo.handlers))
    log = LibraryLog(limit=4).install()
    try:
        warnings.warn("torch.cuda.memory._set_allocator_settings is deprecated", FutureWarning, stacklevel=1)
        logging.getLogger("torch._dynamo.variables").warning("Dynamo detected a call to a functools.lru_cache")
        dynamo.warning("torch's own logger, whose stderr handler is set aside")
        logging.getLogger("diffusers.models").warning("loading\nsecond line")
        logging.getLogger("torch").warning("one too many")
    finally:
        log.uninstall()
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    text = log.text()
    assert "FutureWarning: torch.cuda.memory._set_allocator_settings is deprecated" in text
    assert "torch._dynamo.variables WARNING: Dynamo detected a call to a functools.lru_cache" in text
    assert "loading\n    second line" in text and "one too many" not in text
    assert text.endswith("... 1 more lines not kept\n")
    assert "torch's own logger" in text
    assert (dynamo.propagate, set(dynamo.handlers)) == before and log not in logging.getLogger("torch").handlers
