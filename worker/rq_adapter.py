"""The names of RQ the worker classes rely on, and the check that the installed RQ still has them.

The worker classes (worker.pool, worker.threaded) extend RQ's worker where RQ offers a seam: they
override public methods of `rq.worker.BaseWorker` (each marked `@override`; mypy's
`explicit-override` makes the mark compulsory), set `death_penalty_class`, and give the worker's
Redis connection a redis-py `Retry` (worker.outages). RQ is pinned `>=3.0,<4`, and a 3.x release
may rename or re-shape any of these: a renamed method would silently stop being called, the
override left behind as dead code. `rq_differs` lists every such difference (tests/unit/
test_rq_adapter.py runs it, and `worker.pool.run_workers` logs it at start), the way
`dispatcher.enqueue.RqEnqueuer.batch_differs_from_rq` checks RQ's job layout.

Private RQ names (underscore-prefixed) are allowed only in `PRIVATE_NAMES`, each with the reason
RQ offers no public seam for it; the test also fails on an import from one of RQ's inner modules
(`INNER_MODULES`) when the package above exports the name. docs/architecture.md "How the worker
extends RQ" has the checklist for an RQ upgrade.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from rq.worker import BaseWorker

# name -> why no public seam does. None today: the threaded worker's timeout race (a run thread's
# result and the watchdog's timeout both end the RQ job, the first one wins) is decided through the
# public `handle_job_success` / `handle_job_failure`. A name added here needs its reason.
PRIVATE_NAMES: dict[str, str] = {}

# RQ modules whose names the package above re-exports: import from the package, not from these.
INNER_MODULES = ("rq.worker.base", "rq.worker.worker_classes")

# Public RQ methods the worker classes call (without overriding them), with the parameters passed.
CALLED: dict[str, tuple[str, ...]] = {
    "prepare_execution": ("job",),
    "perform_job": ("job", "queue", "execution"),
}


def rq_owner(cls: type, name: str) -> type | None:
    """The RQ class in `cls`'s MRO that defines `name`."""
    return next((base for base in cls.__mro__ if is_rq(base) and name in vars(base)), None)


def is_rq(cls: type) -> bool:
    """A class of RQ's, or of redis-py's (worker.outages plugs into its backoff seam)."""
    return cls.__module__.split(".", 1)[0] in ("rq", "redis")


def _shape(function: Callable[..., Any]) -> list[tuple[str, Any]]:
    """Parameter names and kinds (defaults aside): what decides whether RQ's calls still bind."""
    return [(p.name, p.kind) for p in inspect.signature(function).parameters.values()]


def overrides(cls: type) -> list[tuple[type, str]]:
    """Our classes in `cls`'s MRO and the names each marks `@override` (typing_extensions sets
    `__override__` on the function)."""
    found = []
    for klass in cls.__mro__:
        if is_rq(klass) or klass is object:
            continue
        for name, attribute in vars(klass).items():
            function = attribute.__func__ if isinstance(attribute, (classmethod, staticmethod)) else attribute
            if getattr(function, "__override__", False):
                found.append((klass, name))
    return found


def rq_differs(classes: Iterable[type]) -> list[str]:
    """Every difference between what `classes` expect of RQ and the installed RQ: an override of a
    method RQ no longer has or calls with other parameters, a private name RQ dropped, a method we
    call that RQ renamed or re-shaped. Empty when all holds."""
    problems: list[str] = []
    for cls in classes:
        for klass, name in overrides(cls):
            owner = rq_owner(cls, name)
            if owner is None:
                if not any(name in vars(base) for base in cls.__mro__ if base is not klass and not is_rq(base) and base is not object):
                    problems.append(f"{klass.__qualname__}.{name} overrides nothing in RQ (renamed or removed?)")
                continue
            ours, theirs = getattr(klass, name), getattr(owner, name)
            if callable(ours) and callable(theirs) and _shape(ours) != _shape(theirs):
                problems.append(f"{klass.__qualname__}.{name}{inspect.signature(ours)} no longer matches RQ's {owner.__qualname__}.{name}{inspect.signature(theirs)}")
    for name in PRIVATE_NAMES:
        if not hasattr(BaseWorker, name):
            problems.append(f"RQ's BaseWorker has no {name} any more")
    for name, parameters in CALLED.items():
        method = getattr(BaseWorker, name, None)
        if method is None:
            problems.append(f"RQ's BaseWorker has no {name} any more")
        elif tuple(_shape(method))[1:] != tuple((p, inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in parameters):
            problems.append(f"RQ's BaseWorker.{name}{inspect.signature(method)} no longer takes {parameters}")
    return problems
