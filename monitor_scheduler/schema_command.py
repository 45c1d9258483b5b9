"""`migrate` and `schema-sql`: Alembic, loaded only when these commands run."""

from __future__ import annotations

import argparse
import sys

from monitor_scheduler.wiring import App
from schema.migrate import MYSQL_DDL_FILE, current_revision, render_mysql_ddl, upgrade

EXIT_OK, EXIT_FAILED = 0, 1


def cmd_migrate(app: App, args: argparse.Namespace) -> int:
    upgrade(app.engine)
    print(f"database at revision {current_revision(app.engine)}")
    return EXIT_OK


def cmd_schema_sql(app: App | None, args: argparse.Namespace) -> int:
    ddl = render_mysql_ddl()
    if args.check:
        if MYSQL_DDL_FILE.read_text() != ddl:
            print(f"{MYSQL_DDL_FILE} is out of date: run `monitor-scheduler schema-sql --write`", file=sys.stderr)
            return EXIT_FAILED
        print(f"{MYSQL_DDL_FILE} matches the migrations")
    elif args.write:
        MYSQL_DDL_FILE.write_text(ddl)
        print(f"wrote {MYSQL_DDL_FILE}")
    else:
        sys.stdout.write(ddl)
    return EXIT_OK
