"""Capacity facts shared by the worker (which announces its concurrency) and the services (which
add it up): the name of the field a worker process sets in its RQ worker hash."""

from __future__ import annotations

# Runs one worker process executes at once (its --threads); absent means 1 (a plain RQ worker).
WORKER_THREADS_FIELD = "monitor_threads"
