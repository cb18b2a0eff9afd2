"""Every exception cocod raises on purpose, in one tree.

This module imports nothing from cocod, so any layer can raise these without creating
import cycles. Driver exceptions (asyncpg, OS errors) are translated into this tree once,
at the adapter boundary (``cocod.storage.pool.map_asyncpg_errors``), chained with ``from``
so the original stays visible. The control server turns each branch into one wire error
code (``cocod.daemon.server.ERROR_CODES``, documented in docs/daemon.md).

    CocodError
    ├── NamingError (also ValueError)       a flow, field, target or table name is invalid
    ├── FlowDefinitionError (also ValueError)
    │                                       the flow definition is inconsistent (types, scopes)
    ├── SettingsError                       configuration or environment is invalid
    ├── AppLoadError                        an app target cannot be found or fails to import
    ├── DatabaseError                       Postgres rejected a statement (a bug or a conflict)
    │   └── DatabaseUnavailableError        Postgres cannot be reached now: refused, lost,
    │       │                               shutting down, pool closed, timed out; retry
    │       │                               with backoff
    │       └── EmbeddedPostgresError       the embedded server could not be started
    ├── SetupError                          setup/drop failed or setup is required first
    │   └── SetupOutOfDateError             update() before setup() (v0: "not up to date")
    ├── SourceError                         a source could not be listed (missing root, permissions)
    ├── RowError                            one source row failed; the others continue
    │   └── DuplicateKeyError               one source row produced the same primary key twice
    ├── LeaseError                          the flow's single-writer lease (cocod.storage.leases)
    │   ├── FlowBusyError                   another process writes the flow (it is named)
    │   └── LeaseLostError                  this process lost the lease; nothing more is written
    ├── FlowClosedError (also RuntimeError) a closed Flow was used
    ├── FlowStillClosingError (also TimeoutError)  FlowInstances waited too long for a replaced
    │                                       flow to close (cocod.flow_instances_entry)
    ├── ProtocolError                       the daemon refuses a control request (has a code)
    ├── DaemonUnavailableError              no daemon answers on the control socket
    └── DaemonError                         the daemon answered a request with an error reply
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself is not imported: the thin CLI loads this module
if TYPE_CHECKING:
    from typing import Any


class CocodError(Exception):
    """Base of every error cocod raises deliberately."""


class NamingError(CocodError, ValueError):
    """A name (flow, field, target, table, namespace) breaks the naming rules."""


class FlowDefinitionError(CocodError, ValueError):
    """The flow definition is inconsistent: wrong argument, unknown field, bad scope."""


class SettingsError(CocodError):
    """Configuration or environment variables are invalid."""


class AppLoadError(CocodError):
    """The app target could not be found or raised while importing."""


class DatabaseError(CocodError):
    """The database rejected what cocod asked of it (retrying the same thing will not help).

    When the database cannot be reached at all, :class:`DatabaseUnavailableError` (a
    subclass) is raised instead, so ``except DatabaseError`` still catches both.
    """


class DatabaseUnavailableError(DatabaseError):
    """The database cannot be reached now: connection refused or lost, the server is
    shutting down, the pool is closed, or a connection attempt timed out.

    Transient by nature: callers keep their pending work and retry with capped exponential
    backoff instead of counting it as a failure of the flow.
    """


class EmbeddedPostgresError(DatabaseUnavailableError):
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


class LeaseError(CocodError):
    """The single-writer lease of a flow instance (see :mod:`cocod.storage.leases`)."""


class FlowBusyError(LeaseError):
    """Another process holds the flow's lease, and this one would not wait (longer).

    ``holder`` is the :class:`~cocod.storage.leases.LeaseHolder` the lease row names, or
    None when it could not be read; the message names it too.
    """

    def __init__(self, message: str, holder: Any = None) -> None:
        super().__init__(message)
        self.holder = holder


class LeaseLostError(LeaseError):
    """This process lost the flow's lease (its session ended, or another process took the
    flow over): the write that found out was rolled back, and nothing more is written."""


class FlowClosedError(CocodError, RuntimeError):
    """A Flow object was used after close()."""


class ProtocolError(CocodError):
    """A control request the daemon refuses; ``code`` is a wire error code.

    ``request_id`` is the id of the refused request when it could be read, so even a
    refusal reaches the caller that sent it.
    """

    def __init__(self, code: str, message: str, *, request_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


class DaemonUnavailableError(CocodError):
    """Nothing answers on the control socket (no daemon, wrong path, or it went away)."""


class DaemonError(CocodError):
    """The daemon answered with an error reply; ``code`` is its wire error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
