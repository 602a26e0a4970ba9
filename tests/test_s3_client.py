"""The boto3 client's set-up (remotes/s3/client.py), against SeaweedFS."""

from __future__ import annotations

import datetime as dt

import dateutil.parser
from botocore.utils import parse_timestamp

from reconcile.remotes.s3.client import _timestamp
from tests.servers_s3 import boto3_client
from tests.test_s3 import open_remote, raw_key


def test_listing_timestamps_skip_dateutil_and_match_botocore(s3_dest, seaweed, monkeypatch):
    bucket, _ = raw_key(s3_dest, "")
    plain = boto3_client(seaweed.endpoint)  # botocore's own parser
    for i in range(5):
        plain.put_object(Bucket=bucket, Key=raw_key(s3_dest, f"t{i}")[1], Body=b"x")
    expected = {o["Key"]: o["LastModified"] for o in plain.list_objects_v2(Bucket=bucket)["Contents"]}
    remote = open_remote(s3_dest)
    calls = []
    real = dateutil.parser.parse
    monkeypatch.setattr(dateutil.parser, "parse", lambda *a, **k: calls.append(a) or real(*a, **k))
    got = {o["Key"]: o["LastModified"] for o in remote.client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert calls == [] and got == expected and all(t.utcoffset() == dt.timedelta(0) for t in got.values())
    remote.close()


def test_other_timestamp_forms_are_parsed_as_botocore_does():
    assert _timestamp("2026-12-07T01:33:01.123Z") == dt.datetime(2026, 12, 7, 1, 33, 1, 123000, dt.timezone.utc)
    assert _timestamp("Mon, 07 Dec 2026 01:33:01 GMT") == dt.datetime(2026, 12, 7, 1, 33, 1, tzinfo=dt.timezone.utc)
    assert _timestamp(0) == dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    assert _timestamp("2026-12-07T01:33:01") == parse_timestamp("2026-12-07T01:33:01")  # no zone: botocore's answer


def test_service_models_load_as_plain_dicts_and_the_client_works(s3_dest):
    from collections import OrderedDict

    from reconcile.remotes.s3 import client as client_module

    remote = open_remote(s3_dest)
    loader = client_module._LOADER[0]
    model = loader.load_service_model("s3", "service-2")
    rules = loader.load_service_model("s3", "endpoint-rule-set-1")
    assert type(model) is dict and type(model["shapes"]["CopyObjectRequest"]) is dict
    assert type(rules) is dict and not isinstance(model["operations"], OrderedDict)
    assert list(model["shapes"]["CopyObjectRequest"]["members"])[:2] == ["ACL", "Bucket"]  # file order kept
    assert remote.client.list_objects_v2(Bucket=remote.bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200
    remote.close()


def test_opening_an_s3_remote_does_not_import_boto3(s3_dest, tmp_path):
    import json
    import os
    import subprocess
    import sys

    code = ("import sys, json; from reconcile.remotes.s3 import S3Remote; from reconcile.remotes.base import "
            "RemoteOptions, S3Options; r = S3Remote.from_url(sys.argv[1], RemoteOptions(s3=S3Options(endpoint="
            "sys.argv[2]), state_dir=sys.argv[3])); n = sum(1 for _ in r.list()); r.close(); "
            "print(json.dumps(['boto3' in sys.modules, n]))")
    endpoint = s3_dest.options.s3.endpoint
    out = subprocess.run([sys.executable, "-c", code, s3_dest.url, endpoint, str(tmp_path / "st")],
                         env={**os.environ, **s3_dest.env}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [False, 0]
