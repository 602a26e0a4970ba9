"""CopyObject without the boto3 client's per-call machinery, for the many
small copies of a folder move: about half the CPU a copy (0.45-0.55 ms
against 0.9-1.2 ms measured on loopback SeaweedFS, where a rename of 500
objects is bound by this process's one core).

A fast path only. It signs the request with botocore's own SigV4 signer and
sends it through the client's own HTTP session (the same TLS, proxy, timeout
and pool settings), and it accepts only one answer: HTTP 200 with a
CopyObjectResult holding an ETag. Anything else (an error status, S3's
"200 with an error body", a connection failure) gives None, and the caller
makes the same copy through the boto3 client, whose retries and error
parsing then decide; a copy done twice writes the same object twice.

Used for path-style endpoints (S3-compatible servers) only: AWS's own
addressing, regions and endpoints stay with botocore."""

from __future__ import annotations

import logging
import threading
from xml.etree import ElementTree

from botocore import exceptions as bex
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.utils import percent_encode

log = logging.getLogger(__name__)

_SAFE = "-._~"  # what botocore leaves unquoted in a path part and in x-amz-copy-source


class QuickCopy:
    """CopyObject requests for one client; copy() is thread-safe."""

    def __init__(self, endpoint_url: str, region: str, credentials, http_session) -> None:
        self.endpoint_url = endpoint_url.rstrip("/")
        self.region = region
        self.credentials = credentials
        self.http = http_session
        self.sent = 0  # requests sent, for tests and -v
        self._lock = threading.Lock()

    @classmethod
    def for_client(cls, client) -> "QuickCopy | None":
        """None where the fast path does not apply (virtual-host addressing,
        no credentials) or botocore's insides are not as expected."""
        s3_config = getattr(client.meta.config, "s3", None) or {}
        signer = getattr(client, "_request_signer", None)
        endpoint = getattr(client, "_endpoint", None)
        credentials = getattr(signer, "_credentials", None)
        http = getattr(endpoint, "http_session", None)
        if (s3_config.get("addressing_style") != "path" or credentials is None or http is None
                or not client.meta.endpoint_url or not client.meta.region_name
                or getattr(signer, "signature_version", None) not in ("s3v4", "v4")):
            return None
        return cls(client.meta.endpoint_url, client.meta.region_name, credentials, http)

    def copy(self, bucket: str, src_key: str, dst_key: str, meta: dict[str, str],
             if_match: str | None = None) -> str | None:
        """the new object's ETag (quotes stripped), or None: then copy through the client."""
        headers = {
            "x-amz-copy-source": percent_encode(f"{bucket}/{src_key}", safe=_SAFE + "/"),
            "x-amz-metadata-directive": "REPLACE",
            **{f"x-amz-meta-{k}": v for k, v in meta.items()},
        }
        if if_match is not None:
            headers["x-amz-copy-source-if-match"] = if_match
        url = f"{self.endpoint_url}/{percent_encode(bucket, safe=_SAFE)}/{percent_encode(dst_key, safe=_SAFE + '/')}"
        request = AWSRequest(method="PUT", url=url, headers=headers, data=b"")
        try:
            S3SigV4Auth(self.credentials.get_frozen_credentials(), "s3", self.region).add_auth(request)
            with self._lock:
                self.sent += 1
            response = self.http.send(request.prepare())
            body = response.content
        except (bex.BotoCoreError, OSError) as exc:
            log.debug("quick copy of %s: %s; copying through the client", src_key, exc)
            return None
        return copy_result_etag(response.status_code, body)


def copy_result_etag(status: int, body: bytes) -> str | None:
    """the ETag of a CopyObjectResult answered with 200; None for anything else"""
    if status != 200 or not body:
        return None
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return None
    if _local(root.tag) != "CopyObjectResult":
        return None  # S3 can answer a copy with 200 and an <Error> body
    for child in root:
        if _local(child.tag) == "ETag" and child.text and child.text.strip('"'):
            return child.text.strip('"')
    return None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]
