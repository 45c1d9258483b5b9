"""Database URLs: which drivers a DATABASE_URL names, and the one check that PostgreSQL's is there.

Its own module, below the settings (which validate DATABASE_URL with it) and the engine module
(which builds engines from it): the settings must not import the engine code, which imports the
retry policy, which reads the settings.
"""

from __future__ import annotations

import importlib.util

from core.exceptions import ConfigurationError

POSTGRES_DRIVER = "postgresql+psycopg"
POSTGRES_EXTRA_HINT = "pip install 'monitor-scheduler[postgres]'"


def normalise_postgres_url(url: str) -> str:
    """postgresql:// (and postgres://, libpq's spelling) names psycopg 3, the one PostgreSQL driver
    this project supports; SQLAlchemy's own default would be psycopg2."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return POSTGRES_DRIVER + "://" + url[len(prefix) :]
    return url


def postgres_driver_installed() -> bool:
    return importlib.util.find_spec("psycopg") is not None


def require_postgres_driver() -> None:
    """ConfigurationError naming the extra when psycopg is not installed (checked before any
    connection, so a missing driver is a configuration problem, not a traceback)."""
    if not postgres_driver_installed():
        raise ConfigurationError(f"invalid setting DATABASE_URL: PostgreSQL needs the psycopg driver: {POSTGRES_EXTRA_HINT}")
