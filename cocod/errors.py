"""Every exception cocod raises on purpose, in one tree.

This module imports nothing from cocod, so any layer can raise these without creating
import cycles. Driver exceptions (asyncpg, OS errors) are translated into this tree at the
adapter boundary, chained with ``from`` so the original stays visible.

    CocodError
    ├── NamingError (also ValueError)       a flow, field, target or table name is invalid
    ├── FlowDefinitionError (also ValueError)
    │                                       the flow definition is inconsistent (types, scopes)
    ├── SettingsError                       configuration or environment is invalid
    ├── DatabaseError                       Postgres cannot be reached or rejected a statement
    │   └── EmbeddedPostgresError           the embedded server could not be started
    ├── SetupError                          setup/drop failed or setup is required first
    │   └── SetupOutOfDateError             update() before setup() (v0: "not up to date")
    ├── SourceError                         a source could not be listed (missing root, permissions)
    ├── RowError                            one source row failed; the others continue
    │   └── DuplicateKeyError               one source row produced the same primary key twice
    └── FlowClosedError (also RuntimeError) a closed Flow was used
"""

from __future__ import annotations


class CocodError(Exception):
    """Base of every error cocod raises deliberately."""


class NamingError(CocodError, ValueError):
    """A name (flow, field, target, table, namespace) breaks the naming rules."""


class FlowDefinitionError(CocodError, ValueError):
    """The flow definition is inconsistent: wrong argument, unknown field, bad scope."""


class SettingsError(CocodError):
    """Configuration or environment variables are invalid."""


class DatabaseError(CocodError):
    """The database cannot be reached, or rejected what cocod asked of it."""


class EmbeddedPostgresError(DatabaseError):
    """The embedded PostgreSQL server could not be started or reached."""


class SetupError(CocodError):
    """Applying or checking the persistent setup of a flow failed."""


class SetupOutOfDateError(SetupError):
    """The flow's persistent setup differs from its definition; run setup first."""


class SourceError(CocodError):
    """A source as a whole failed (e.g. its root folder is missing); no rows were touched."""


class RowError(CocodError):
    """Processing one source row failed; that row is retried on the next pass."""


class DuplicateKeyError(RowError):
    """One source row collected two rows with the same primary key for one export."""


class FlowClosedError(CocodError, RuntimeError):
    """A Flow object was used after close()."""
