"""Compiled code that travels (``cluster.compile_cache`` as a store URI): a fresh machine loads
what another compiled; a corrupt, foreign or unreadable object is ignored with one line."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from deforum_ray.render.compile_cache import CompileArtifacts, pack, unpack

FACTS = {"format": 1, "torch": "2.x", "triton": None, "cuda": None, "device": "cpu", "model": "abc",
         "precision": "bf16", "scope": "blocks", "mode": "default", "batch": 4, "size": [512, 512]}


def test_an_object_carries_its_facts_and_a_stranger_is_not_one():
    facts, artifacts = unpack(pack(FACTS, b"\x00artifacts"))
    assert facts == FACTS and artifacts == b"\x00artifacts"
    assert unpack(b"") is None and unpack(b"\xff\xff\xff\xffjunk") is None and unpack(b"\x00\x00\x00\x02[]") is None


def test_none_yet_is_a_cold_start_and_each_bad_object_is_one_line(tmp_path):
    uri = str(tmp_path / "cache")
    cache = CompileArtifacts(uri, FACTS)
    assert cache.load() is None and not cache.loaded  # nothing there yet: compile, then save
    other = CompileArtifacts(uri, {**FACTS, "size": [1024, 1024]})
    assert other.key != cache.key  # each frame size (batch, GPU, versions, ...) has its own object

    cache.store.put(cache.rel, pack({**FACTS, "torch": "1.0", "device": "NVIDIA H100"}, b"x"))
    problem = cache.load()
    assert problem == f"compile cache {cache.where()}: foreign (made with other device, torch); compiling anew"

    cache.store.put(cache.rel, b"PK\x03\x04 some zip")
    assert cache.load() == f"compile cache {cache.where()}: not compile artifacts of deforum-ray; compiling anew"

    cache.store.put(cache.rel, pack(FACTS, b"not torch's bytes"))
    assert cache.load().startswith(f"compile cache {cache.where()}: unreadable (")

    cache.store.put(cache.rel, pack(FACTS, b"whole"))
    with open(cache.store.path(cache.rel), "r+b") as handle:  # a bit flipped after its marker was written
        handle.seek(10)
        handle.write(b"Z")
    problem = cache.load()
    assert problem.startswith(f"compile cache {cache.where()}: corrupt (") and problem.endswith("; compiling anew")
    assert not cache.loaded and len(problem.splitlines()) == 1


NODE = textwrap.dedent("""
    import json, sys, torch
    from deforum_ray.render.compile_cache import CompileArtifacts
    facts = {"format": 1, "torch": torch.__version__, "device": "cpu", "size": [8, 8]}
    cache = CompileArtifacts(sys.argv[1], facts)
    problem = cache.load()
    f = torch.compile(lambda x: torch.sin(x) * 2 + 1, dynamic=False)
    y = f(torch.arange(8.0))
    saved = cache.save()
    counters = torch._dynamo.utils.counters["inductor"]
    print(json.dumps({"problem": problem, "loaded": cache.loaded, "saved": saved, "y": y.tolist(),
                      "hits": counters["fxgraph_cache_hit"], "misses": counters["fxgraph_cache_miss"]}))
""")


@pytest.mark.skipif(sys.platform != "linux", reason="Inductor's CPU code needs a C++ compiler (Linux CI)")
def test_a_fresh_machine_loads_what_another_compiled(tmp_path):
    """Two processes, each with an empty Inductor cache folder of its own (two machines): the
    first compiles and saves to the store; the second loads and finds its graph compiled."""
    import json

    store = str(tmp_path / "store")

    def node(name: str) -> dict:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / name), "TORCHINDUCTOR_FX_GRAPH_CACHE": "1"}
        out = subprocess.run([sys.executable, "-c", NODE, store], capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    first = node("machine-a")
    assert first["problem"] is None and not first["loaded"] and first["saved"] and first["misses"] >= 1
    second = node("machine-b")
    assert second["problem"] is None and second["loaded"] and not second["saved"]
    assert second["hits"] >= 1 and second["misses"] == 0 and second["y"] == first["y"]
