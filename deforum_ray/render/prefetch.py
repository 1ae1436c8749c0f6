"""``fetch-model --all-nodes``: one fetch task pinned to each live node of a running cluster.

Each node downloads into its own HF cache once, before any render; the workers a render starts
later then find the model cached and load it offline (:mod:`..model.fetch`), instead of every
actor of a node racing to download the same weights at the start of a job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import first_line
from ..model.fetch import FetchResult, fetch_model
from .cluster import check_cluster, connect, forwarded_env


@dataclass(frozen=True)
class NodeFetch:
    node: str  # the node's IP address
    result: FetchResult | None
    error: Exception | None  # the node's own one-line error, unwrapped from Ray's

    def line(self) -> str:
        return f"node {self.node}: {self.result.line() if self.result else 'failed: ' + first_line(self.error or '')}"


def fetch_on_every_node(source: str, address: str | None, *, connect_timeout: float = 30.0,
                        on_done: Callable[[NodeFetch, int], None] | None = None, depth: bool = False) -> list[NodeFetch]:
    """Fetch ``source`` on every live node (strict node affinity, no CPU reserved: a download
    waits for no render), in parallel; ``on_done(fetch, nodes)`` as each node finishes."""
    import ray
    from ray.exceptions import RayTaskError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    check_cluster(address, connect_timeout)
    started = connect(address)
    try:
        nodes = sorted((n for n in ray.nodes() if n.get("Alive")), key=lambda n: n["NodeManagerAddress"])
        task = ray.remote(num_cpus=0, max_retries=0)(_fetch_here)
        pending = {
            task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
                         **forwarded_env()).remote(source, depth): node["NodeManagerAddress"]
            for node in nodes
        }
        done: list[NodeFetch] = []
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            node = pending.pop(ref)
            try:
                fetched = NodeFetch(node, ray.get(ref), None)
            except RayTaskError as exc:
                fetched = NodeFetch(node, None, exc.cause if isinstance(exc.cause, Exception) else exc)
            done.append(fetched)
            if on_done is not None:
                on_done(fetched, len(nodes))
        return sorted(done, key=lambda f: f.node)
    finally:
        if started:
            ray.shutdown()


def _fetch_here(source: str, depth: bool = False) -> FetchResult:
    return fetch_model(source, progress=False, depth=depth)  # one bar per node in the driver's output would be noise
