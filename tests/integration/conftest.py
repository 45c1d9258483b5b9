"""Fixtures for tests that run real processes against the database's real clock."""

from __future__ import annotations

import pytest

from tests.conftest import Backend
from tests.integration.helpers import real_now


@pytest.fixture
def mysql_now_backend(mysql_backend: Backend) -> Backend:
    """MariaDB whose schedules are due by the database's real clock (processes use NOW())."""
    mysql_backend.clock.moment = real_now(mysql_backend)
    return mysql_backend
