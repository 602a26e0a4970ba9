"""The config file: mappings by name, flags over the file, `config check`
with file, line and fix, secrets warned about, exit 2 for config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconcile import config
from reconcile.errors import ConfigError
from tests.cli import reconcile
from tests.mirror import tree, write

T0 = 1_600_000_000_000_000_000


def write_config(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture
def trees(tmp_path):
    src = tmp_path / "src"
    write(src / "keep.txt", b"keep", T0)
    write(src / "skip.tmp", b"tmp", T0)
    write(src / "sub" / "x.txt", b"x", T0)
    return src, tmp_path / "dst"


def test_default_path_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert config.default_path() == str(tmp_path / "reconcile" / "config.toml")
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert config.default_path() == str(tmp_path / "h" / ".config" / "reconcile" / "config.toml")


def test_apply_by_name_uses_the_mapping(trees, tmp_path):
    src, dst = trees
    cfg = write_config(tmp_path / "c.toml", f"""
[mapping.photos]
source = "{src}"
dest = "{dst}"
exclude = ["*.tmp"]
""")
    p = reconcile("plan", "photos", "--config", cfg, check=0)
    assert "keep.txt" in p.stdout and "skip.tmp" not in p.stdout
    reconcile("apply", "photos", "--config", cfg, check=0)
    assert sorted(tree(dst)) == ["keep.txt", "sub", "sub/x.txt"]


def test_flags_override_the_file(trees, tmp_path):
    src, dst = trees
    cfg = write_config(tmp_path / "c.toml", f"""
[mapping.photos]
source = "{src}"
dest = "{dst}"
exclude = ["*.tmp"]
""")
    reconcile("apply", "photos", "--config", cfg, "--exclude", "sub/", check=0)
    assert sorted(tree(dst)) == ["keep.txt", "skip.tmp"]


def test_relative_paths_are_relative_to_the_file(trees, tmp_path):
    src, dst = trees
    cfg = write_config(tmp_path / "c.toml", '[mapping.m]\nsource = "src"\ndest = "dst"\n')
    reconcile("apply", "m", "--config", cfg, check=0, cwd="/")
    assert "keep.txt" in tree(dst)


def test_all_runs_every_mapping_and_status_reports_them(tmp_path):
    text = ""
    for name in ("one", "two"):
        write(tmp_path / name / "f.txt", name.encode(), T0)
        text += f'[mapping.{name}]\nsource = "{tmp_path / name}"\ndest = "{tmp_path / (name + "-copy")}"\n'
    cfg = write_config(tmp_path / "c.toml", text)
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    reconcile("apply", "--all", "--config", cfg, env=env, check=0)
    assert (tmp_path / "one-copy" / "f.txt").read_bytes() == b"one"
    assert (tmp_path / "two-copy" / "f.txt").read_bytes() == b"two"
    p = reconcile("status", "--all", "--config", cfg, "--json", env=env, check=0)
    docs = [json.loads(line) for line in p.stdout.splitlines()]
    assert [d["last_run"]["result"] for d in docs] == ["ok", "ok"]
    p = reconcile("status", "two", "--config", cfg, env=env, check=0)
    assert p.stdout.startswith("[two]") and "last run:" in p.stdout


def test_config_env_var(trees, tmp_path):
    src, dst = trees
    cfg = write_config(tmp_path / "c.toml", f'[mapping.m]\nsource = "{src}"\ndest = "{dst}"\n')
    reconcile("apply", "m", env={"RECONCILE_CONFIG": str(cfg)}, check=0)
    assert "keep.txt" in tree(dst)


def test_default_location_is_used(trees, tmp_path):
    src, dst = trees
    write_config(tmp_path / "xdg" / "reconcile" / "config.toml", f'[mapping.m]\nsource = "{src}"\ndest = "{dst}"\n')
    reconcile("apply", "m", env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")}, check=0)
    assert "keep.txt" in tree(dst)


BROKEN = """# a comment
[mapping.photos]
source = "/nowhere/photos"
dest = "ftp://host/x"
transfers = 0
delet = true

[mapping.docs]
dest = "s3://bucket/docs"
max_delete = "ten"
"""


def test_config_check_reports_file_line_and_fix(tmp_path):
    cfg = write_config(tmp_path / "c.toml", BROKEN)
    p = reconcile("config", "check", "--config", cfg, check=2)
    out = p.stdout
    assert f"{cfg}:4: mapping.photos.dest: has an unknown scheme" in out
    assert f"{cfg}:5: mapping.photos.transfers: must be 1 or more; fix: write" in out
    assert f"{cfg}:6: mapping.photos.delet: unknown key; fix: did you mean delete?" in out
    assert f"{cfg}:8: mapping.docs.source: is missing; fix: add" in out
    assert f"{cfg}:10: mapping.docs.max_delete: has the wrong type" in out
    doc = json.loads(reconcile("config", "check", "--config", cfg, "--json", check=2).stdout)
    assert {(p["key"], p["line"]) for p in doc["problems"]} >= {("mapping.photos.delet", 6)}


def test_config_check_ok_and_missing_source_is_a_warning(tmp_path):
    cfg = write_config(tmp_path / "c.toml", f'[mapping.m]\nsource = "{tmp_path / "gone"}"\ndest = "/x"\n')
    p = reconcile("config", "check", "--config", cfg, check=0)
    assert f"warning: {cfg}:2: mapping.m.source:" in p.stdout and "ok, 1 warning(s)" in p.stdout


def test_syntax_error_names_the_line(tmp_path):
    cfg = write_config(tmp_path / "c.toml", '[mapping.m]\nsource = "/a"\ndest = /b\n')
    p = reconcile("config", "check", "--config", cfg, check=2)
    assert f"{cfg}:3: syntax: not valid TOML" in p.stderr


def test_config_error_exits_2(trees, tmp_path):
    cfg = write_config(tmp_path / "c.toml", BROKEN)
    p = reconcile("apply", "photos", "--config", cfg, check=2)
    assert "mapping.photos.delet: unknown key" in p.stderr
    p = reconcile("apply", "nosuch", "--config", cfg, check=2)
    assert "no mapping named 'nosuch'" in p.stderr
    p = reconcile("apply", "x", "--config", tmp_path / "missing.toml", check=2)
    assert "no config file at" in p.stderr
    p = reconcile("apply", "--all", "x", "--config", cfg, check=2)
    assert "--all takes no SOURCE, DEST or mapping name" in p.stderr
    p = reconcile("apply", "--config", cfg, check=2)
    assert "give SOURCE DEST, a mapping name, or --all" in p.stderr


def test_another_mappings_error_does_not_block(trees, tmp_path):
    src, dst = trees
    cfg = write_config(tmp_path / "c.toml", BROKEN + f'\n[mapping.good]\nsource = "{src}"\ndest = "{dst}"\n')
    reconcile("apply", "good", "--config", cfg, check=0)
    assert "keep.txt" in tree(dst)
    p = reconcile("apply", "--all", "--config", cfg, check=2)
    assert "mapping.photos.delet: unknown key" in p.stderr and "mapping.good" not in p.stderr


def test_a_folder_without_dest_is_a_clear_error(trees, tmp_path):
    src, _ = trees
    cfg = write_config(tmp_path / "c.toml", "")
    p = reconcile("apply", src, "--config", cfg, check=2)
    assert "give the destination too" in p.stderr


def test_password_warned_when_readable_by_others(trees, tmp_path):
    src, dst = trees
    text = f'[mapping.m]\nsource = "{src}"\ndest = "{dst}"\npassword = "hunter2"\n'
    cfg = write_config(tmp_path / "c.toml", text, mode=0o644)
    p = reconcile("config", "check", "--config", cfg, check=0)
    assert f"{cfg}:4: mapping.m.password: looks like a secret; it is not used" in p.stdout
    assert f"readable by group or others (mode 0644); fix: chmod 600 {cfg}" in p.stdout
    assert "hunter2" not in p.stdout
    p = reconcile("apply", "m", "--config", cfg, check=0)
    assert "chmod 600" in p.stderr
    cfg.chmod(0o600)
    p = reconcile("config", "check", "--config", cfg, check=0)
    assert "chmod 600" not in p.stdout and "looks like a secret" in p.stdout


def test_password_in_dest_url_is_an_error(tmp_path):
    cfg = write_config(tmp_path / "c.toml", '[mapping.m]\nsource = "/a"\ndest = "sftp://me:pw@host/x"\n')
    with pytest.raises(ConfigError, match=r"c.toml:3: mapping.m.dest: holds a password"):
        config.load_checked(str(cfg))


def test_line_of_handles_quotes_and_dotted_keys():
    lines = ['title = 1', '[ mapping."my.pics" ]', 'source = "a"', '', '[mapping.b]', '"dest" = "x"']
    assert config.line_of(lines, "mapping.my.pics", "source") == 3
    assert config.line_of(lines, "mapping.b", "dest") == 6
    assert config.line_of(lines, "mapping.b", "nope") == 5


def test_apply_mapping_only_fills_defaults():
    m = config.Mapping("m", {"source": "/s", "dest": "/d", "delete": True, "transfers": 8, "exclude": ["a"]})
    defaults = {"delete": False, "transfers": None, "exclude": None}
    out = config.apply_mapping(m, {"delete": False, "transfers": 2, "exclude": None}, defaults)
    assert out == {"delete": True, "transfers": 2, "exclude": ["a"]}


def test_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no config file at"):
        config.load(str(tmp_path / "none.toml"))


def test_controls_can_live_in_a_mapping(trees, tmp_path):
    src, dst = trees
    cfg = write_config(tmp_path / "c.toml", f"""
[mapping.photos]
source = "{src}"
dest = "{dst}"
backup_dir = ".trash"
backup_keep = 30
bwlimit = "4M"
links = "follow"
checksum = true
perms = true
""")
    doc = json.loads(reconcile("plan", "photos", "--config", cfg, "--json", check=0).stdout)
    assert doc["controls"] == {"bwlimit": 4 * 1024**2, "backup_dir": ".trash", "backup_keep_days": 30,
                               "links": "follow", "checksum": True, "perms": True}
    # a flag given on the command line still wins
    doc = json.loads(reconcile("plan", "photos", "--config", cfg, "--json", "--links", "store", check=0).stdout)
    assert doc["controls"]["links"] == "store"


def test_bad_control_values_are_config_errors(tmp_path):
    cfg = write_config(tmp_path / "c.toml", f"""
[mapping.m]
source = "{tmp_path}"
dest = "s3://bucket/x"
links = "sometimes"
bwlimit = "fast"
backup_dir = "a/b"
backup_keep = 0
s3_sse = "AES-256"
checksum = 1
""")
    out = reconcile("config", "check", "--config", cfg, check=2).stdout
    for line, key in ((5, "links"), (6, "bwlimit"), (7, "backup_dir"), (8, "backup_keep"), (9, "s3_sse"),
                      (10, "checksum")):
        assert f"{cfg}:{line}: mapping.m.{key}:" in out, key


def test_a_broken_mapping_is_reported_even_when_a_folder_has_its_name(tmp_path, monkeypatch):
    (tmp_path / "photos").mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = write_config(tmp_path / "c.toml", f'[mapping.photos]\nsource = "{tmp_path}"\ndest = "/x"\ndelet = true\n')
    p = reconcile("apply", "photos", "--config", cfg, check=2)
    assert "delet: unknown key" in p.stderr and "is a folder" not in p.stderr
    p = reconcile("apply", "photos", "--config", tmp_path / "none.toml", check=2)
    assert "give the destination too" in p.stderr
