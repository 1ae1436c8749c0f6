"""Rendering a job on Ray: the chains, their resume protocol, where their frames go, the worker
and the driver.

``resume`` (where a chain stands in the store: checkpoints, DONE markers), ``sinks`` (what
happens to each finished frame: write queue, PNG, checkpoint, run log), ``worker`` (the Ray actor
holding a resident model), ``progress`` (the progress actor and the final stage's task, kept free
of torch so that Ray starts them fast), ``local`` (one clip in this process) and ``driver`` (the
pool, scheduling, retries, progress, then the final stage). It sits above everything but the CLI
and the API.
"""
