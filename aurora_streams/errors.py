"""The one exception hierarchy of aurora-streams.

Every error the package raises on purpose derives from :class:`AuroraError`. Errors that
need an operator to act say what to do in their message.
"""

from __future__ import annotations

__all__ = [
    "AuroraError",
    "BrokerError",
    "ConfigError",
    "CorruptState",
    "DeliveryFailed",
    "DomainRejection",
    "InvalidQuery",
    "InvalidReading",
    "LogReset",
    "TopicMismatchError",
    "UploadTooLarge",
]


class AuroraError(Exception):
    """Root of every error raised by aurora-streams."""


class ConfigError(AuroraError):
    """A setting is missing or malformed. Operator action: fix the AURORA_* variable."""


class BrokerError(AuroraError):
    """The broker could not be started or reached."""


class DeliveryFailed(BrokerError):
    """The broker did not acknowledge a record; what it belongs to must not be acknowledged
    (a batch's input, an ingest job's file)."""


class TopicMismatchError(AuroraError):
    """An existing topic does not match what the app needs (missing, wrong partition count).

    Operator action: the message names the topic and the fix (create the topics, or set
    ``AURORA_PARTITIONS`` to the existing count, or recreate the topic).
    """


class InvalidReading(AuroraError):
    """A raw message or one of its readings breaks the input contract.

    ``reason`` is a stable machine-readable code (e.g. ``invalid_type``), ``field`` the
    offending field when there is one, and ``index`` the position of the reading inside a
    gateway batch. The message is for humans and ends up in the DLQ record.
    """

    def __init__(
        self, reason: str, message: str, *, field: str | None = None, index: int | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.index = index

    @property
    def message(self) -> str:
        return str(self.args[0])

    def at_index(self, index: int) -> InvalidReading:
        """The same error, located at reading ``index`` of a gateway batch."""
        return InvalidReading(self.reason, f"reading[{index}]: {self.message}", field=self.field, index=index)


class DomainRejection(InvalidReading):
    """A well-formed reading the device state machine cannot accept (e.g. a channel that
    switches between register and interval readings). It goes to the DLQ like bad input."""


class CorruptState(AuroraError):
    """A stored value (a device state, a forecaster) that this version cannot decode: written
    by a newer version or damaged. Operator action: run the version that wrote it, or
    delete the worker's state to rebuild it from the changelogs."""


class UploadTooLarge(AuroraError):
    """An upload, or a member of its archive, is larger than ``AURORA_MAX_UPLOAD_BYTES``
    allows once read or expanded (HTTP 413)."""


class InvalidQuery(AuroraError):
    """A read request's parameter is malformed or out of range: the caller's error (HTTP
    400). ``reason`` is a stable code, ``field`` the parameter."""

    def __init__(self, reason: str, message: str, field: str) -> None:
        super().__init__(message)
        self.reason, self.field = reason, field

    @property
    def message(self) -> str:
        return str(self.args[0])


class LogReset(AuroraError):
    """A raw partition's log is not the one its device states were built from: a state
    remembers an offset at or past the log's end, which a re-delivery can never explain
    (a broker's data wiped, the raw topic deleted and recreated, an unclean leader election).

    Raised only with ``AURORA_ON_LOG_RESET=refuse``. Operator action: if the log was
    recreated on purpose, set ``AURORA_ON_LOG_RESET=rebase`` (the default) and restart;
    nothing is committed for the refused input, so it is read again then.
    """

    def __init__(self, partition: int, offset: int, state_offset: int, log_end: int) -> None:
        super().__init__(
            f"raw partition {partition}: a device state is at offset {state_offset} but the log "
            f"ends at {log_end} (message at offset {offset}): the log was reset or recreated. "
            "Refused (AURORA_ON_LOG_RESET=refuse): set AURORA_ON_LOG_RESET=rebase to go on from "
            "the device states, or delete the worker's state to start over"
        )
        self.partition, self.offset = partition, offset
        self.state_offset, self.log_end = state_offset, log_end
