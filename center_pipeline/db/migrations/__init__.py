"""Alembic migrations of the application tables; `center_pipeline.db.schema` runs them."""
