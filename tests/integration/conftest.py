"""Fixtures for tests that run real processes against the database's real clock."""

from __future__ import annotations

import pytest

from tests.conftest import Backend
from tests.integration.helpers import real_now


@pytest.fixture
def server_now_backend(server_backend: Backend) -> Backend:
    """A database server (MariaDB or PostgreSQL, per the test's parameter) whose schedules are due
    by the database's real clock (processes use it)."""
    server_backend.clock.moment = real_now(server_backend)
    return server_backend


@pytest.fixture
def mysql_now_backend(mysql_backend: Backend) -> Backend:
    """MariaDB whose schedules are due by the database's real clock (processes use NOW())."""
    mysql_backend.clock.moment = real_now(mysql_backend)
    return mysql_backend
