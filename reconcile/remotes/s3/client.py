"""The S3 client (botocore's; boto3 itself is not imported: it only added
about 15-20 ms of start-up): endpoint checks, a session per remote sharing
one loader of botocore's service models, and the request settings we rely on."""

from __future__ import annotations

import gzip
import json
import os
from datetime import datetime
from urllib.parse import urlsplit

from botocore import exceptions as bex
from botocore.config import Config
from botocore.loaders import JSONFileLoader

from reconcile.errors import ConfigError
from reconcile.remotes.base import RemoteOptions


def _is_aws(endpoint: str | None) -> bool:
    host = (endpoint or "").split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0].lower()
    return host.endswith(".amazonaws.com") or host.endswith(".amazonaws.com.cn")


def check_endpoint(url: str | None, where: str) -> None:
    """an endpoint with user info (http://key:secret@host) would put the secret
    in messages and in the state folder's record: refused, never echoed"""
    if url and "@" in urlsplit(url).netloc:
        host = urlsplit(url).netloc.rpartition("@")[2]
        raise ConfigError(f"{where} holds a user name or key before '@' (…@{host}): remove it and give the "
                          "keys through AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or --profile")
    if url and urlsplit(url).scheme.lower() not in ("http", "https"):
        raise ConfigError(f"{where} {url!r} is not an http:// or https:// URL: "
                          "write it with its scheme, like http://nas.local:8333 or https://s3.example.com")


def _endpoint_from_env() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


class _PlainJSONFiles(JSONFileLoader):
    """botocore's model files read into plain dicts (ordered as OrderedDicts
    are): without its object_pairs_hook=OrderedDict, loading the S3 model and
    its endpoint rules costs about 20 ms less CPU at each start"""

    def load_file(self, file_path):
        for ext, opener in ((".json", open), (".json.gz", gzip.open)):  # botocore's two forms
            if os.path.isfile(file_path + ext):
                with opener(file_path + ext, "rb") as f:
                    return json.loads(f.read())
        return None


_LOADER: list = []  # botocore's data loader, shared by the sessions of this process


def _session(profile: str | None):
    """a new session (credentials are read afresh: a long `reconcile watch`
    sees a rotated key), sharing one loader of botocore's service models:
    loading them again cost each run of `reconcile watch` about 0.3 s"""
    import botocore.session

    core = botocore.session.get_session()
    if _LOADER:
        core.register_component("data_loader", _LOADER[0])
    else:
        loader = core.get_component("data_loader")
        loader.file_loader = _PlainJSONFiles()
        _LOADER.append(loader)
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_timestamp)
    if profile:
        core.set_config_variable("profile", profile)
    core.get_scoped_config()  # an unknown profile fails here
    return core


def _timestamp(value):
    """a response's timestamps (a listing's LastModified, one per object) as
    botocore gives them, without its dateutil parse (0.2 ms each): S3's ISO
    8601 through datetime.fromisoformat, anything else as botocore does"""
    if isinstance(value, str) and "T" in value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    from botocore.utils import parse_timestamp

    return parse_timestamp(value)


def make_client(options: RemoteOptions, pool: int):
    try:
        session = _session(options.s3.profile or None)
    except bex.ProfileNotFound:
        raise ConfigError(f"AWS profile {options.s3.profile!r} not found in ~/.aws/config or ~/.aws/credentials") from None
    endpoint = options.s3.endpoint or None
    for where, url in (("--s3-endpoint", endpoint), ("AWS_ENDPOINT_URL", _endpoint_from_env())):
        check_endpoint(url, where)
    attempts = int(options.extra.get("s3_attempts", 3))  # the engine retries Transient itself

    def build(path_style: bool):
        cfg = Config(
            # always signed: bodies are read once to sign, then to send (MeteredBody counts on that)
            s3={"addressing_style": "path", "payload_signing_enabled": True} if path_style
            else {"payload_signing_enabled": True},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=pool,
            retries={"mode": "standard", "total_max_attempts": attempts},
            connect_timeout=10,
            read_timeout=120,
            tcp_keepalive=True,
        )
        # a custom endpoint needs some region to sign with; AWS picks its own.
        region = session.get_config_variable("region") or ("us-east-1" if path_style else None)
        try:
            return session.create_client("s3", endpoint_url=endpoint, region_name=region, config=cfg)
        except ValueError as exc:
            raise ConfigError(f"bad S3 endpoint {endpoint!r}: {exc}") from None

    if endpoint or _endpoint_from_env():
        client = build(True)
    else:
        client = build(False)
        # an endpoint from the profile's config: S3-compatible servers want path style.
        if "amazonaws.com" not in (client.meta.endpoint_url or ""):
            client = build(True)
    # registered on the general name so it runs after botocore's own PutObject/UploadPart handler.
    client.meta.events.register("before-call.s3", _drop_expect_header)
    return client


def _drop_expect_header(params: dict, **_) -> None:
    """no "Expect: 100-continue": after a 0-byte PUT with it, SeaweedFS 4.48
    leaves a stray reply on the kept-alive connection and the next request
    stalls until its read timeout (measured: every one of 20)."""
    params.get("headers", {}).pop("Expect", None)
