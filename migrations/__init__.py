"""Alembic environment of authsvc, shipped in the wheel as ``authsvc.migrations``."""
