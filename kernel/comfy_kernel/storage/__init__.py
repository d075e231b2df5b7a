"""The storage layer: one database (SQLite or PostgreSQL) for the kernel and its plugins, with migrations."""

from .database import (
    Database,
    PostgresDatabase,
    SQLiteDatabase,
    Transaction,
    UnstorableText,
    connect,
    is_postgres_url,
)
from .migrations import Migrations, upgrade

__all__ = ["Database", "Migrations", "PostgresDatabase", "SQLiteDatabase", "Transaction", "UnstorableText", "connect",
           "is_postgres_url", "upgrade"]
