"""SQLite plumbing for the stand-ins.

Calls run on the event loop: every statement is a short indexed lookup or a small write, which is
cheaper than a hop to a thread for a single-user dev stack.
"""

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def open_db(path: Path, schema: str) -> sqlite3.Connection:
    """Open (creating if needed) a database in autocommit mode with WAL.

    WAL lets a test or a developer inspect the file while the stack runs; `synchronous=NORMAL`
    keeps writes durable across a process crash, which is all a dev stack needs.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=2000")
    db.executescript(schema)
    return db


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """Group statements atomically; autocommit connections otherwise commit each one alone."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
