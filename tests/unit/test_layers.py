"""The layer contract's other half: no function-local imports in the application packages.

import-linter (pyproject.toml, run by scripts/test) checks that imports point down; an import
hidden inside a function would still be counted by it, but is also how cycles used to be dodged
and how start-up costs hide. Every import of the application is at module level, where a reader
and the contract see it. (Commands with heavy dependencies are loaded through importlib by name,
monitor_scheduler/cli.py, on purpose and documented there.)
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from typing_extensions import override

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "dispatcher", "worker", "services", "web", "monitor_scheduler", "schema")


def function_local_imports(source: str) -> list[int]:
    """Line numbers of import statements inside a function body."""
    found: list[int] = []

    class Visitor(ast.NodeVisitor):
        depth = 0

        @override
        def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
            self._inside(node)

        @override
        def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
            self._inside(node)

        @override
        def visit_Import(self, node: ast.Import) -> None:
            self._note(node)

        @override
        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            self._note(node)

        def _inside(self, node: ast.AST) -> None:
            self.depth += 1
            self.generic_visit(node)
            self.depth -= 1

        def _note(self, node: ast.Import | ast.ImportFrom) -> None:
            if self.depth:
                found.append(node.lineno)

    Visitor().visit(ast.parse(source))
    return found


def test_the_checker_finds_an_import_inside_a_function() -> None:
    assert function_local_imports("import os\n\ndef f():\n    from json import dumps\n    return dumps\n") == [4]
    assert function_local_imports("import os\n\nclass A:\n    x = 1\n") == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_function_local_imports(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): lines
        for path in sorted((ROOT / package).rglob("*.py"))
        if "migrations" not in path.parts and (lines := function_local_imports(path.read_text()))
    }
    assert offenders == {}, f"imports inside functions (move them to the top of the module): {offenders}"


def test_a_worker_or_dispatcher_process_does_not_load_the_postgresql_dialect() -> None:
    """The schema names its PostgreSQL types without SQLAlchemy's PostgreSQL dialect, whose import
    alone added ~3 MB to every process on SQLite and MariaDB (schema.models.PostgresMillis); a
    PostgreSQL deployment loads it when its engine is made."""
    probe = (
        "import sys, monitor_scheduler.cli, worker.pool, worker.jobs, dispatcher.service;"
        "print('sqlalchemy.dialects.postgresql' in sys.modules)"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "False"
