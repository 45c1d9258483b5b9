"""The suite runs without warnings: a new DeprecationWarning fails it (pyproject.toml's
filterwarnings), and the web tests use the HTTP client Starlette's TestClient asks for."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest


def test_a_deprecation_warning_fails_the_test() -> None:
    with pytest.raises(DeprecationWarning):
        warnings.warn("an API on its way out", DeprecationWarning, stacklevel=1)


def test_the_test_client_imports_without_a_deprecation_warning() -> None:
    # A fresh interpreter: in this one the module may be imported already (warnings fire once).
    # Every warning is an error there: Starlette's StarletteDeprecationWarning is a UserWarning.
    result = subprocess.run([sys.executable, "-W", "error", "-c", "import fastapi.testclient"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
