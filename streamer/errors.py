"""The error tree. Every error says what was wrong, what was received and what was expected.

Each error also inherits the builtin it refines and carries the HTTP status the API
maps it to (CONVENTIONS C7).
"""

from __future__ import annotations

from typing import ClassVar


class StreamerError(Exception):
    """Root of all streamer errors."""

    http_status: ClassVar[int] = 500


class ConfigError(StreamerError, ValueError):
    """A setting, topology or CLI argument is invalid."""

    http_status = 400


class BadRequest(StreamerError, ValueError):
    """An API or CLI argument is invalid (bad id, k out of range, batch too large...)."""

    http_status = 400


class UnknownType(StreamerError, KeyError):
    """An embedding type name that is not declared or not served."""

    http_status = 404

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class UnknownEntity(StreamerError, KeyError):
    """An entity id that has no vector in this type."""

    http_status = 404

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DimensionMismatch(StreamerError, ValueError):
    """A vector whose dimension differs from the index's or table's."""

    http_status = 422


class InvalidVector(StreamerError, ValueError):
    """A vector with NaN, inf or zero norm, which cosine search cannot use."""

    http_status = 422


class RetiredType(StreamerError, KeyError):
    """The requested type version is retired in the registry (``streamer types retire``)."""

    http_status = 410

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class RegistryUnavailable(StreamerError, RuntimeError):
    """The ``registry`` topic could not be read (broker unreachable or too slow)."""

    http_status = 503


class StateError(StreamerError, RuntimeError):
    """Persisted state is inconsistent or belongs to another type/version (operator must act)."""

    http_status = 500
