"""`migrate` and `schema-sql`: Alembic, loaded only when these commands run."""

from __future__ import annotations

import argparse
import sys

from monitor_scheduler.wiring import App
from schema.migrate import DDL_FILES, current_revision, render_ddl, upgrade

EXIT_OK, EXIT_FAILED = 0, 1


def cmd_migrate(app: App, args: argparse.Namespace) -> int:
    upgrade(app.engine)
    print(f"database at revision {current_revision(app.engine)}")
    return EXIT_OK


def cmd_schema_sql(app: App | None, args: argparse.Namespace) -> int:
    ddl, path = render_ddl(args.dialect), DDL_FILES[args.dialect]
    if args.check:
        if not path.exists() or path.read_text() != ddl:
            print(f"{path} is out of date: run `monitor-scheduler schema-sql --dialect {args.dialect} --write`", file=sys.stderr)
            return EXIT_FAILED
        print(f"{path} matches the migrations")
    elif args.write:
        path.write_text(ddl)
        print(f"wrote {path}")
    else:
        sys.stdout.write(ddl)
    return EXIT_OK
