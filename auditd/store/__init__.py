"""The store: sqlmodel tables, engine/session set-up, alembic migrations."""
