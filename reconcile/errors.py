"""Our own error types. The engine never sees paramiko or botocore exceptions.

Each error carries the documented exit code it maps to.
"""

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_REFUSED = 4
EXIT_LOCKED = 5


class ReconcileError(Exception):
    exit_code = EXIT_ERROR


class ConfigError(ReconcileError):
    """bad input from the user: a wrong url, flag, credential or host key."""

    exit_code = EXIT_USAGE


class AuthError(ConfigError):
    pass


class SafetyRefusal(ReconcileError):
    exit_code = EXIT_REFUSED


class LockBusy(ReconcileError):
    exit_code = EXIT_LOCKED


class RemoteError(ReconcileError):
    pass


class NotFound(RemoteError):
    pass


class NotSupported(RemoteError):
    pass


class Transient(RemoteError):
    """worth retrying: connection lost, timeout, throttling."""

    exit_code = EXIT_PARTIAL


class Unreachable(Transient):
    """the remote could not be reached at all (dns, refused, timeout)."""


class Refused(Unreachable):
    """nothing listens at that host and port: a wrong port, or a server down."""


class UnresolvedHost(Unreachable):
    """the host name does not resolve: a typo, or no network yet."""

    def __init__(self, message: str, host: str = "") -> None:
        super().__init__(message)
        # rebuilt from its message alone when it comes from a forked child (forked.py)
        self.host = host or message.partition("cannot resolve host ")[2].partition(":")[0]


class DestinationFull(Transient):
    """the destination's disk is full, or the quota used up: the run stops at
    once, its journal kept, and is not retried (waiting for free space would
    hold the run for --retry-for, 5 minutes by default, in vain)."""

    WHY = "the destination's disk is full"


class Permanent(RemoteError):
    pass


class SourceChanged(ReconcileError):
    """a local file changed while we read it; left for the next run."""
