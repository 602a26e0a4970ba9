"""Flags that cannot go together are refused before anything runs: exit 2,
one line naming them. --config typed beside SOURCE DEST (it used to be
ignored without a word), a --config file that does not exist, -q with -v.
RECONCILE_CONFIG in the environment, as cron sets it, still runs SOURCE DEST."""

from __future__ import annotations

import pytest

from tests.cli import reconcile
from tests.mirror import write

T0 = 1_600_000_000_000_000_000


def _one_line(p) -> str:
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


@pytest.mark.parametrize("command", ["plan", "apply", "status", "verify", "watch"])
def test_config_typed_beside_source_and_dest_is_refused(tmp_path, command):
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src / "a", b"1", T0)
    dst.mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text('[mapping.photos]\nsource = "src"\ndest = "dst"\n')
    extra = [] if command == "status" else ["--state-dir", state]
    p = reconcile(command, src, dst, "--config", cfg, *extra, check=2, timeout=60)
    line = _one_line(p)
    assert "--config" in line and "SOURCE and DEST" in line
    assert not state.exists() and list(dst.iterdir()) == []


def test_config_from_the_environment_leaves_source_and_dest_alone(tmp_path):
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    write(src / "a", b"1", T0)
    dst.mkdir()
    env = {"RECONCILE_CONFIG": str(tmp_path / "not-there.toml")}
    reconcile("apply", src, dst, "--state-dir", state, "-q", env=env, check=0)
    assert (dst / "a").read_bytes() == b"1"


@pytest.mark.parametrize("name", ["photos", "src"])
def test_a_missing_config_file_typed_is_reported(tmp_path, name):
    """"src" is also a folder here: the old code said no mapping was configured (for
    "photos" it reported the missing file already)"""
    write(tmp_path / "src" / "a", b"1", T0)
    p = reconcile("plan", name, "--config", tmp_path / "nope.toml", check=2, cwd=tmp_path)
    line = _one_line(p)
    assert "no config file at" in line and "nope.toml" in line


@pytest.mark.parametrize("command", [["plan"], ["apply"], ["watch"], ["restore"]])
def test_quiet_and_verbose_together_are_refused(tmp_path, command):
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "a", b"1", T0)
    dst.mkdir()
    args = [dst, tmp_path / "out"] if command == ["restore"] else [src, dst, "--state-dir", tmp_path / "state"]
    p = reconcile(*command, *args, "-q", "-v", check=2, timeout=60)
    line = _one_line(p)
    assert "-q" in line and "-v" in line
    assert list(dst.iterdir()) == [] and not (tmp_path / "out").exists()
