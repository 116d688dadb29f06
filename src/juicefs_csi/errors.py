"""Domain errors, each bound to the CSI status it must surface as.

Pure layers raise these; the gRPC edge maps them to status codes, so no
module below `csi/` needs to know about gRPC.
"""

from enum import Enum


class ErrorKind(Enum):
    INVALID_ARGUMENT = "InvalidArgument"
    NOT_FOUND = "NotFound"
    ALREADY_EXISTS = "AlreadyExists"
    FAILED_PRECONDITION = "FailedPrecondition"
    ABORTED = "Aborted"
    UNAVAILABLE = "Unavailable"
    OUT_OF_RANGE = "OutOfRange"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    INTERNAL = "Internal"
    UNIMPLEMENTED = "Unimplemented"


class DriverError(Exception):
    """An error whose message is safe to show: it never carries a secret."""

    kind: ErrorKind = ErrorKind.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DriverError):
    kind = ErrorKind.INVALID_ARGUMENT


class NotFound(DriverError):
    kind = ErrorKind.NOT_FOUND


class AlreadyExists(DriverError):
    kind = ErrorKind.ALREADY_EXISTS


class FailedPrecondition(DriverError):
    kind = ErrorKind.FAILED_PRECONDITION


class Aborted(DriverError):
    kind = ErrorKind.ABORTED


class Unavailable(DriverError):
    kind = ErrorKind.UNAVAILABLE


class OutOfRange(DriverError):
    kind = ErrorKind.OUT_OF_RANGE


class DeadlineExceeded(DriverError):
    kind = ErrorKind.DEADLINE_EXCEEDED


class Internal(DriverError):
    kind = ErrorKind.INTERNAL


class Unimplemented(DriverError):
    kind = ErrorKind.UNIMPLEMENTED
