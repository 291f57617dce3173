"""Alembic environment for canao's own tables (run programmatically, no alembic.ini)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from canao.study._provenance import VERSION_TABLE, Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url is not None, "canao's migration runner sets sqlalchemy.url"
engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      version_table=VERSION_TABLE,
                      # Optuna's tables share the database: never touch them (a table
                      # always has a name; only some constraints may lack one).
                      include_name=lambda name, type_, _: type_ != "table"
                      or (name is not None and name.startswith("canao_")))
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Workers starting together on a fresh database: one migrates, the rest wait
            # here and then find the schema current.
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(7242261)"))
        context.run_migrations()
engine.dispose()
