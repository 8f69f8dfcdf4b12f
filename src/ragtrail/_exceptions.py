"""ragtrail's error hierarchy.

::

    RagtrailError
    ├── ConfigError            bad arguments or configuration (store path, YAML, options)
    ├── StoreError             the store cannot be opened, migrated, read or written
    │   ├── SchemaVersionError the store was written by a newer ragtrail
    │   └── ArtifactError      an artifact version or its files cannot be stored, found or verified
    ├── DatasetError           a dataset cannot be loaded or validated (names file:line and field)
    ├── EvalError              an evaluation cannot run or resume
    │   ├── JudgeError         an LLM judge cannot be used
    │   └── AliasConflictError an alias moved between reading and moving it (compare-and-swap lost)
    ├── ConnectorError         a connector cannot instrument its library
    └── MissingDependencyError (also an ImportError) an optional extra is not installed

    RagtrailWarning (a UserWarning): non-fatal misconfiguration

Every message says what went wrong, where, and what to do. Foreign errors are translated at the
boundary with ``raise ... from exc``.
"""

from __future__ import annotations


class RagtrailError(Exception):
    """Base class of every error ragtrail raises on purpose."""


class ConfigError(RagtrailError, ValueError):
    """Bad arguments or configuration."""


class StoreError(RagtrailError):
    """The store cannot be opened, migrated, read or written."""


class SchemaVersionError(StoreError):
    """The store was written by a newer version of ragtrail than this one."""


class ArtifactError(StoreError):
    """An artifact version or one of its files cannot be stored, found or verified."""


class DatasetError(RagtrailError, ValueError):
    """A dataset cannot be loaded or validated."""


class EvalError(RagtrailError):
    """An evaluation cannot run, resume or be found."""


class JudgeError(EvalError):
    """An LLM judge cannot be used."""


class AliasConflictError(EvalError):
    """The alias moved between reading it and moving it (another promotion won the race)."""


class ConnectorError(RagtrailError):
    """A connector cannot instrument its library."""


class MissingDependencyError(RagtrailError, ImportError):
    """An optional dependency is not installed."""


class RagtrailWarning(UserWarning):
    """Warnings ragtrail issues on purpose (misconfiguration that is not fatal)."""


__all__ = [
    "AliasConflictError",
    "ArtifactError",
    "ConfigError",
    "ConnectorError",
    "DatasetError",
    "EvalError",
    "JudgeError",
    "MissingDependencyError",
    "RagtrailError",
    "RagtrailWarning",
    "SchemaVersionError",
    "StoreError",
]
