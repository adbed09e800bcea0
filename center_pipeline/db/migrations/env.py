"""Alembic environment: runs the migrations on the connection that the caller passes in.

`center_pipeline.db.schema` opens the connection, takes the migration lock and sets
`config.attributes["connection"]`, so no alembic.ini and no offline mode are needed.
"""

from alembic import context

from center_pipeline.db.schema import VERSION_TABLE
from center_pipeline.db.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "The migrations need an open connection in config.attributes['connection']. "
        "Run them with `center-pipeline db upgrade`."
    )

context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
