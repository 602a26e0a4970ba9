"""botocore's exceptions and S3's error codes, turned into the project's own
errors (reconcile.errors): none of botocore's leaves this package."""

from __future__ import annotations

import contextlib
import re
import socket
from urllib.parse import urlsplit

from botocore import exceptions as bex

from reconcile.errors import (
    AuthError,
    ConfigError,
    NotFound,
    NotSupported,
    Permanent,
    ReconcileError,
    Refused,
    Transient,
    Unreachable,
    UnresolvedHost,
)

CRED_CODES = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired", "InvalidClientTokenId", "MissingSecurityHeader",
}
DENIED_CODES = {"AccessDenied", "AllAccessDisabled", "AccountProblem", "403", "Forbidden"}
REGION_CODES = {
    "PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException",
    "301", "Redirect",
}
MISSING_CODES = {"NoSuchKey", "NotFound", "404", "NoSuchUpload", "NoSuchVersion"}
BUSY_CODES = {
    "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling",
    "ThrottlingException", "RequestTimeTooSkewed", "OperationAborted", "500", "502", "503", "504",
}


class Errors:
    """S3Remote's error mapping: uses self.endpoint and self.bucket."""

    @contextlib.contextmanager
    def _errors(self, what: str):
        """botocore's exceptions never leave this module."""
        try:
            yield
        except bex.ClientError as exc:
            raise self._map_client_error(exc, what) from None
        except (bex.EndpointConnectionError, bex.ConnectTimeoutError) as exc:
            if _lies_under(exc, socket.gaierror):
                host = urlsplit(self.endpoint).hostname or self.endpoint
                raise UnresolvedHost(f"{what}: cannot resolve host {host}: {_reason(exc)}", host) from None
            if _lies_under(exc, ConnectionRefusedError):
                raise Refused(f"{what}: cannot reach the S3 endpoint {self.endpoint}: {_reason(exc)}: "
                              "is the server running there, and is that its port?") from None
            raise Unreachable(f"{what}: cannot reach the S3 endpoint {self.endpoint}: {_reason(exc)}") from None
        except (bex.ConnectionError, bex.HTTPClientError, bex.ResponseStreamingError,
                bex.IncompleteReadError) as exc:
            inner = getattr(exc, "kwargs", {}).get("error")
            if isinstance(inner, ReconcileError):
                raise inner from None  # our own body refused to go on (the file changed)
            raise Transient(f"{what}: connection to {self.endpoint} failed: {_reason(exc)}") from None
        except (bex.NoCredentialsError, bex.PartialCredentialsError, bex.CredentialRetrievalError,
                bex.UnknownCredentialError):
            raise AuthError(
                "no usable AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "use ~/.aws/credentials, or pass --profile"
            ) from None
        except bex.NoRegionError:
            raise ConfigError("no AWS region: set AWS_DEFAULT_REGION or the profile's region") from None
        except bex.BotoCoreError as exc:
            raise Permanent(f"{what}: {type(exc).__name__}: {exc}") from None
        except Exception as exc:  # urllib3 errors can escape while a body streams
            if type(exc).__module__.startswith("urllib3"):
                raise Transient(f"{what}: connection to {self.endpoint} failed: {exc}") from None
            raise

    def _map_client_error(self, exc: bex.ClientError, what: str) -> Exception:
        err = exc.response.get("Error", {}) or {}
        meta = exc.response.get("ResponseMetadata", {}) or {}
        code = str(err.get("Code", "") or "")
        status = int(meta.get("HTTPStatusCode", 0) or 0)
        bucket = self.bucket
        if code == "NoSuchBucket":
            return ConfigError(f"bucket {bucket!r} does not exist at {self.endpoint}: create it first, or check the name")
        if code in CRED_CODES:
            return AuthError(
                f"S3 rejected the credentials for bucket {bucket!r} ({code}): "
                "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or --profile"
            )
        if code in DENIED_CODES or status == 403:
            return AuthError(
                f"access denied to bucket {bucket!r} while trying to {what}: "
                "the credentials lack permission; check the bucket policy or use another --profile"
            )
        if code in REGION_CODES or status == 301:
            region = (meta.get("HTTPHeaders", {}) or {}).get("x-amz-bucket-region") or err.get("Region")
            hint = f"set AWS_DEFAULT_REGION={region}" if region else "set AWS_DEFAULT_REGION to the bucket's region"
            return ConfigError(f"bucket {bucket!r} is in another region: {hint} or the profile's region")
        if code == "InvalidBucketName":
            return ConfigError(f"{bucket!r} is not a valid bucket name")
        if code in MISSING_CODES or status == 404:
            return NotFound(f"{what}: not found")
        if code in BUSY_CODES or status in (408, 429) or status >= 500:
            return Transient(f"{what}: the server is busy or failing ({code or status})")
        if code in ("NotImplemented", "501"):
            return NotSupported(f"{what}: the server does not implement this ({code})")
        return Permanent(f"{what}: {code or status}: {err.get('Message', '')}".rstrip(": "))


def _lies_under(exc: BaseException, kind: type[BaseException]) -> bool:
    """whether an exception of kind (socket.gaierror, ConnectionRefusedError)
    lies under botocore's connection error."""
    seen: set[int] = set()
    todo: list = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, kind):
            return True
        nested = [e.__cause__, e.__context__, getattr(e, "reason", None), *getattr(e, "args", ()),
                  *(getattr(e, "kwargs", None) or {}).values()]
        todo += [n for n in nested if isinstance(n, BaseException)]
    return False


def _reason(exc: Exception) -> str:
    """botocore's message without the URL's query (signatures live there)."""
    text = str(exc)
    return re.sub(r"\?[^\s\"']*", "", text)


def precondition_failed(exc: bex.ClientError) -> bool:
    """a CopySourceIfMatch (or If-Match) that did not hold: HTTP 412"""
    return (exc.response.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode") == 412
