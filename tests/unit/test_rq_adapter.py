"""The RQ seams the worker classes use are still there in the installed RQ (worker.rq_adapter): a
3.x release that renames or re-shapes one fails here, in seconds, instead of silently leaving an
override uncalled."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from rq import SimpleWorker
from rq.worker import BaseWorker
from typing_extensions import override

from worker import outages, pool, rq_adapter, threaded

ROOT = Path(__file__).resolve().parents[2]
TREE = ("core", "dispatcher", "worker", "services", "web", "monitor_scheduler", "schema", "scripts", "tests")
OUR_RQ_CLASSES = [*pool.WORKER_CLASSES.values(), threaded.ThreadedWorker, threaded.NoDeathPenalty, outages.WaitingForRedis]


def _rq_private_names() -> set[str]:
    """BaseWorker's underscore names: its methods and the attributes its methods set."""
    names = {n for n in dir(BaseWorker) if n.startswith("_") and not n.startswith("__")}
    return names | set(re.findall(r"self\.(_[a-z]\w*)", inspect.getsource(BaseWorker)))


def test_rq_still_has_every_method_the_worker_classes_override_with_the_same_parameters() -> None:
    assert rq_adapter.rq_differs(OUR_RQ_CLASSES) == []


def test_every_method_that_replaces_one_of_rq_is_marked_override_so_the_check_sees_it() -> None:
    unmarked = [
        f"{klass.__qualname__}.{name}"
        for cls in OUR_RQ_CLASSES
        for klass in cls.__mro__
        if not rq_adapter.is_rq(klass) and klass is not object
        for name, attribute in vars(klass).items()
        if inspect.isfunction(attribute) and not name.startswith("__") and rq_adapter.rq_owner(cls, name) is not None
        and not getattr(attribute, "__override__", False)
    ]
    assert unmarked == []


def test_the_check_names_an_override_rq_renamed_and_one_it_reshaped() -> None:
    class Renamed(SimpleWorker):
        @override
        def heart_beat(self) -> None:  # type: ignore[misc]  # what a rename in RQ leaves behind
            pass

    class Reshaped(SimpleWorker):
        @override
        def execute_job(self, job: object, queue: object, extra: int = 0) -> None:
            pass

    problems = rq_adapter.rq_differs([Renamed, Reshaped])
    assert len(problems) == 2, problems
    assert "Renamed.heart_beat overrides nothing in RQ" in problems[0]
    assert "Reshaped.execute_job" in problems[1] and "no longer matches" in problems[1]


def test_no_private_rq_name_outside_the_adapters_list() -> None:
    private = _rq_private_names() - set(rq_adapter.PRIVATE_NAMES)
    found = []
    for package in TREE:
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text()
            where = path.relative_to(ROOT)
            # attribute use (`self._x`, `super()._x`) and methods defined in a class (indented)
            found += [f"{where}: {m.group(1)}" for m in re.finditer(r"\.(_[a-z]\w*)\b", text) if m.group(1) in private]
            found += [f"{where}: def {m.group(1)}" for m in re.finditer(r"^[ \t]+def (_[a-z]\w*)\(", text, re.M) if m.group(1) in private]
            found += [f"{where}: import from {module}" for module in rq_adapter.INNER_MODULES if f"from {module} import" in text]
    assert found == []
