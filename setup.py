"""Packaging glue that pyproject.toml cannot express on its own.

The Alembic environment lives at the top level (``migrations/``), as the project's layout asks, and
ships inside the wheel as the sub-package ``authsvc.migrations``, so that an installed ``authsvc db
upgrade`` finds its scripts from any folder.
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["authsvc", "authsvc.*"]),
        "authsvc.migrations",
        "authsvc.migrations.versions",
    ],
    package_dir={
        "authsvc.migrations": "migrations",
        "authsvc.migrations.versions": "migrations/versions",
    },
)
