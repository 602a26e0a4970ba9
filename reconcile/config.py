"""The config file: named mappings in TOML, read with tomllib.

    [mapping.photos]
    source = "~/Pictures"
    dest = "sftp://me@nas/backup/Pictures"
    delete = true
    exclude = ["*.tmp", ".cache/"]

Every problem names the file, the line of the key and the fix. Secrets never
live here: a password-like key is ignored with a warning (and a second one
when the file is readable by group or others).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import stat
import sys
import tomllib
from dataclasses import dataclass, field
from typing import Any

from reconcile.errors import ConfigError
from reconcile.remotes.sftp import findlist
from reconcile.units import parse_rate

# key -> (expected python type, what to tell the user); the names are the
# command-line flags' names, so a mapping maps one to one onto the flags.
KEYS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "source": (str, 'a local folder, e.g. source = "~/Pictures"'),
    "dest": (str, 'a folder or URL, e.g. dest = "sftp://me@nas/backup/Pictures"'),
    "delete": (bool, "true or false, e.g. delete = true"),
    "exclude": (list, 'a list of patterns, e.g. exclude = ["*.tmp", ".cache/"]'),
    "transfers": (int, "a whole number of 1 or more, e.g. transfers = 4"),
    "max_delete": (int, "a whole number of 0 or more, e.g. max_delete = 100"),
    "retry_for": (str, 'a duration, e.g. retry_for = "5m"'),
    "state_dir": (str, 'a folder, e.g. state_dir = "/var/lib/reconcile/photos"'),
    "ssh_key": (str, 'a private key file, e.g. ssh_key = "~/.ssh/id_ed25519"'),
    "known_hosts": (str, 'a known_hosts file, e.g. known_hosts = "~/.ssh/known_hosts"'),
    "s3_endpoint": (str, 'an URL, e.g. s3_endpoint = "http://nas:8333"'),
    "profile": (str, 'an AWS profile name, e.g. profile = "backup"'),
    "s3_storage_class": (str, 'e.g. s3_storage_class = "STANDARD_IA"'),
    "s3_sse": (str, 's3_sse = "AES256" or s3_sse = "aws:kms"'),
    "s3_sse_kms_key_id": (str, 'a KMS key id, e.g. s3_sse_kms_key_id = "alias/backup"'),
    "backup_dir": (str, 'one folder name on the destination, e.g. backup_dir = ".reconcile-trash"'),
    "backup_keep": ((int, float), "a number of days, e.g. backup_keep = 30"),
    "bwlimit": (str, 'bytes per second, e.g. bwlimit = "4M"'),
    "links": (str, 'links = "skip", "follow" or "store"'),
    "checksum": (bool, "true or false, e.g. checksum = true"),
    "perms": (bool, "true or false, e.g. perms = true"),
    "name_encoding": (bool, "true or false, e.g. name_encoding = true"),
    "ssh_find": (str, 'ssh_find = "auto", "always" or "never"'),
}
PATH_KEYS = ("ssh_key", "known_hosts", "state_dir")
S3_KEYS = ("s3_endpoint", "profile", "s3_storage_class", "s3_sse", "s3_sse_kms_key_id")
SFTP_KEYS = ("ssh_key", "known_hosts", "ssh_find")
SECRET_NAME = re.compile(r"pass(word|phrase|wd)?$|secret|token|credential|api_?key|access_?key", re.I)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SECRET_FIX = ("reconcile never reads secrets from this file: delete the key and use ssh-agent, --ssh-key, "
              "RECONCILE_SFTP_PASSWORD or an AWS profile instead")


def default_path() -> str:
    if sys.platform == "win32":
        base = os.environ.get("APPDATA") or os.path.expanduser("~\\AppData\\Roaming")
        return os.path.join(base, "reconcile", "config.toml")
    if sys.platform == "darwin":
        return os.path.expanduser("~/Library/Application Support/reconcile/config.toml")
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return os.path.join(base, "reconcile", "config.toml")


@dataclass
class Problem:
    file: str
    line: int | None
    key: str
    message: str
    fix: str
    warning: bool = False
    mapping: str | None = None  # the mapping it belongs to; None: the whole file

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        key = f" {self.key}:" if self.key else ""
        return f"{where}:{key} {self.message}; fix: {self.fix}"


@dataclass
class Mapping:
    name: str
    values: dict[str, Any]  # checked values, keyed by flag name; paths expanded

    @property
    def source(self) -> str:
        return self.values["source"]

    @property
    def dest(self) -> str:
        return self.values["dest"]


@dataclass
class Config:
    path: str
    mappings: dict[str, Mapping] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if not p.warning]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.warning]

    def mapping(self, name: str) -> Mapping:
        if name in self.mappings:
            return self.mappings[name]
        # a mapping with an error is still one the file names: a typo of it gets the suggestion
        named = sorted(set(self.mappings) | {p.mapping for p in self.problems if p.mapping})
        close = difflib.get_close_matches(name, named, n=1)
        hint = f"did you mean {close[0]}? Or add a " if close else "add a "
        raise ConfigError(f"no mapping named {name!r} in {self.path} (mappings: {', '.join(named) or 'none'}); "
                          f"{hint}[mapping.{name}] table with source and dest, or give SOURCE DEST")


def load(path: str | None = None) -> Config:
    """Read and check the file; raises ConfigError only when it cannot be read
    or parsed. Problems in its content are in Config.problems."""
    path = os.path.abspath(os.path.expanduser(path or default_path()))
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(f"no config file at {path}; create it (see the README, \"The config file\") "
                          "or pass --config FILE") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror}") from None
    text = raw.decode("utf-8", "replace")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        p = Problem(path, int(m.group(1)) if m else None, "syntax", f"not valid TOML ({exc})",
                    "correct the line (strings need quotes, tables look like [mapping.NAME])")
        raise ConfigError(str(p)) from None
    cfg = Config(path)
    _check(cfg, doc, text)
    return cfg


def load_checked(path: str | None, name: str | None = None) -> Config:
    """load, print warnings, and refuse a file with errors (exit 2); with a
    name, another mapping's problems do not stop this one."""
    cfg = load(path)
    relevant = [p for p in cfg.problems if name is None or p.mapping in (None, name)]
    for w in relevant:
        if w.warning:
            print(f"warning: {w}", file=sys.stderr)
    errors = [p for p in relevant if not p.warning]
    if errors:
        listed = "\n  ".join(str(p) for p in errors)
        raise ConfigError(f"{len(errors)} problem(s) in the config file:\n  {listed}\n"
                          "(reconcile config check lists them all)")
    return cfg


# --- checking ------------------------------------------------------------------------


class _Checker:
    def __init__(self, cfg: Config, text: str) -> None:
        self.cfg = cfg
        self.lines = text.splitlines()
        self.secret_found = False

    def add(self, table: str, key: str, message: str, fix: str, warning: bool = False) -> None:
        dotted = f"{table}.{key}" if table and key else (table or key)
        mapping = table.split(".", 1)[1] if table.startswith("mapping.") else None
        self.cfg.problems.append(Problem(self.cfg.path, line_of(self.lines, table, key), dotted,
                                         message, fix, warning, mapping))


def _check(cfg: Config, doc: dict, text: str) -> None:
    c = _Checker(cfg, text)
    for key, value in doc.items():
        if key != "mapping":
            _top_level(c, key, value)
    mappings = doc.get("mapping", {})
    if not isinstance(mappings, dict):
        c.add("", "mapping", "must be tables", "write [mapping.NAME] headers")
        mappings = {}
    if not mappings:
        c.add("", "", "no mappings", "add a [mapping.NAME] table with source and dest", warning=True)
    for name, table in mappings.items():
        m = _mapping(c, name, table)
        if m is not None:
            cfg.mappings[name] = m
    if c.secret_found:
        _check_mode(c)


def _top_level(c: _Checker, key: str, value: Any) -> None:
    if SECRET_NAME.search(key):
        c.secret_found = True
        c.add("", key, "looks like a secret; it is not used", SECRET_FIX, warning=True)
    else:
        fix = "put settings inside a [mapping.NAME] table"
        if isinstance(value, dict) and difflib.get_close_matches(key.lower(), ["mapping"], cutoff=0.7):
            name = next(iter(value), "NAME")
            fix = f"did you mean [mapping.{name}]? mapping tables are headed [mapping.NAME], singular"
        c.add("", key, "unknown top-level key", fix)


def _mapping(c: _Checker, name: str, table: Any) -> Mapping | None:
    where = f"mapping.{name}"
    if not isinstance(table, dict):
        c.add("mapping", name, "must be a table", f"write a [mapping.{name}] header with keys under it")
        return None
    before = len(c.cfg.errors)
    if not NAME.match(name):
        c.add(where, "", "the name must be letters, digits, '.', '_' or '-'",
              "rename the table, e.g. [mapping.photos]")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if _key_ok(c, where, key, value):
            values[key] = value
    for key in ("source", "dest"):
        if key not in table:
            c.add(where, key, "is missing", f"add {KEYS[key][1]}")
    values = _normalise(c, where, values)
    if len(c.cfg.errors) > before:
        return None
    return Mapping(name, values)


def _key_ok(c: _Checker, where: str, key: str, value: Any) -> bool:
    if key not in KEYS:
        if SECRET_NAME.search(key):
            c.secret_found = True
            c.add(where, key, "looks like a secret; it is not used", SECRET_FIX, warning=True)
            return False
        close = difflib.get_close_matches(key, KEYS, n=1)
        fix = f"did you mean {close[0]}?" if close else f"use one of: {', '.join(KEYS)}"
        c.add(where, key, "unknown key", fix)
        return False
    want, example = KEYS[key]
    # bool is an int in python: keep true/false out of number keys
    if not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
        c.add(where, key, f"has the wrong type ({type(value).__name__})", f"write {example}")
        return False
    return _value_ok(c, where, key, value)


def _value_ok(c: _Checker, where: str, key: str, value: Any) -> bool:
    problem = _value_problem(key, value)
    if problem:
        c.add(where, key, problem, f"write {KEYS[key][1]}")
    return problem is None


def _value_problem(key: str, value: Any) -> str | None:
    if key == "transfers" and value < 1:
        return "must be 1 or more"
    if key == "max_delete" and value < 0:
        return "must be 0 or more"
    if key == "exclude" and not all(isinstance(p, str) for p in value):
        return "every pattern must be a string"
    if key == "retry_for" and not re.fullmatch(r"\d+(\.\d+)?[smh]?", value):
        return f"{value!r} is not a duration"
    if key in ("source", "dest") and not value.strip():
        return "is empty"
    return _control_problem(key, value)


def _control_problem(key: str, value: Any) -> str | None:
    if key == "links" and value not in ("skip", "follow", "store"):
        return f"{value!r} is not skip, follow or store"
    if key == "ssh_find" and value not in findlist.WAYS:
        return f"{value!r} is not {', '.join(findlist.WAYS[:-1])} or {findlist.WAYS[-1]}"
    if key == "bwlimit" and not _flag_accepts(parse_rate, value):
        return f"{value!r} is not a rate"
    if key == "backup_keep" and value <= 0:
        return "must be more than 0"
    if key == "backup_dir" and not _flag_accepts(_trash_root, value):
        return "must be one folder name at the top of the destination"
    if key == "s3_sse" and value not in ("AES256", "aws:kms"):
        return f"{value!r} is not AES256 or aws:kms"
    return None


def _trash_root(value: str) -> object:
    from reconcile.trash import trash_root  # the flag's own rule

    return trash_root(value)


def _flag_accepts(parse, value: str) -> bool:
    try:
        parse(value)
    except ConfigError:
        return False
    return True


def _normalise(c: _Checker, where: str, values: dict[str, Any]) -> dict[str, Any]:
    """expand ~ and make relative folders relative to the config file's folder,
    so cron (which starts in $HOME) and a shell agree."""
    base = os.path.dirname(c.cfg.path)
    out = dict(values)
    for key in ("source", *PATH_KEYS):
        if key in out:
            out[key] = _local_path(out[key], base)
    dest = out.get("dest")
    if dest is not None:
        out["dest"] = _dest(c, where, dest, base)
        _remote_keys(c, where, out)
    return out


def _local_path(value: str, base: str) -> str:
    return os.path.normpath(os.path.join(base, os.path.expanduser(value)))


def _dest(c: _Checker, where: str, dest: str, base: str) -> str:
    from reconcile.remotes import dest_kind

    try:
        kind = dest_kind(dest)
    except ConfigError:
        c.add(where, "dest", "has an unknown scheme",
              "write a folder, file:///path, sftp://[user@]host[:port]/path or s3://bucket[/prefix]")
        return dest
    if kind == "local" and not dest.startswith("file://"):
        return _local_path(dest, base)
    if "://" in dest and re.match(r"^[a-z0-9]+://[^/@]*:[^/@]*@", dest, re.I):
        c.secret_found = True
        c.add(where, "dest", "holds a password", "remove it from the URL; " + SECRET_FIX.split(": ", 1)[1])
    return dest


def _remote_keys(c: _Checker, where: str, values: dict[str, Any]) -> None:
    from reconcile.remotes import dest_kind

    try:
        kind = dest_kind(values["dest"])
    except ConfigError:
        return
    for key in S3_KEYS if kind != "s3" else ():
        if key in values:
            c.add(where, key, f"applies to s3:// destinations only; it is ignored for this {kind} one",
                  f"remove {key}", warning=True)
    for key in SFTP_KEYS if kind != "sftp" else ():
        if key in values:
            c.add(where, key, f"applies to sftp:// destinations only; it is ignored for this {kind} one",
                  f"remove {key}", warning=True)


def _check_mode(c: _Checker) -> None:
    if sys.platform == "win32":
        return  # acls, not mode bits: nothing reliable to look at
    mode = stat.S_IMODE(os.stat(c.cfg.path).st_mode)
    if mode & 0o077:
        c.add("", "", f"holds a password-like value and is readable by group or others (mode {mode:04o})",
              f"chmod 600 {c.cfg.path}", warning=True)


def line_of(lines: list[str], table: str, key: str) -> int | None:
    """the line of key inside [table] (or of the table header when key is
    empty or not found), found in the text since tomllib gives no positions."""
    current, header_line = "", None
    for i, raw in enumerate(lines, 1):
        line = raw.strip()
        header = re.match(r"^\[\s*([^\[\]]+?)\s*\]", line)
        if header:
            current = _unquote_dotted(header.group(1))
            if current == table:
                header_line = i
            continue
        if key and current == table and re.match(rf"^[\"']?{re.escape(key)}[\"']?\s*=", line):
            return i
        # dotted keys at top level: mapping.photos.source = ...
        if key and current == "" and table and re.match(
                rf"^{re.escape(table)}\.[\"']?{re.escape(key)}[\"']?\s*=", _unquote_dotted(line)):
            return i
    return header_line


def _unquote_dotted(text: str) -> str:
    return re.sub(r"\s*\.\s*", ".", text.replace('"', "").replace("'", ""))


# --- flags -----------------------------------------------------------------------------


def apply_mapping(mapping: Mapping, flags: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """the flags with the mapping's values filled in: a flag counts as given
    on the command line when it differs from its default, and then it wins."""
    out = dict(flags)
    for key, value in mapping.values.items():
        if key in out and out[key] == defaults.get(key):
            out[key] = value
    return out


# --- reconcile config check -------------------------------------------------------------


def check_command(path: str | None, json_out: bool) -> int:
    """every problem, with its line and fix; 2 when any is an error."""
    cfg = load(path)  # unreadable or not TOML: ConfigError, exit 2
    _check_sources(cfg)
    _check_dests(cfg)
    if json_out:
        print(json.dumps({"file": cfg.path, "mappings": sorted(cfg.mappings),
                          "problems": [dataclasses.asdict(p) for p in cfg.problems]}))
    else:
        for p in cfg.problems:
            print(f"{'warning' if p.warning else 'error'}: {p}")
        word = "ok" if not cfg.errors else f"{len(cfg.errors)} error(s)"
        print(f"{cfg.path}: {word}, {len(cfg.warnings)} warning(s); "
              f"mappings: {', '.join(sorted(cfg.mappings)) or 'none usable'}")
    return 2 if cfg.errors else 0


def _check_sources(cfg: Config) -> None:
    """a missing source is only a warning: the disk may just be unmounted now."""
    lines = open(cfg.path, encoding="utf-8", errors="replace").read().splitlines()
    for m in cfg.mappings.values():
        if not os.path.isdir(m.source):
            cfg.problems.append(Problem(cfg.path, line_of(lines, f"mapping.{m.name}", "source"),
                                        f"mapping.{m.name}.source", f"{m.source} is not a folder now",
                                        "mount the disk or correct the path", warning=True, mapping=m.name))


def _check_dests(cfg: Config) -> None:
    """a local destination whose folders above its last are missing: apply
    refuses it (exit 2); here a warning, as the disk may just be unmounted now."""
    from reconcile.pairs import check_dest_parent

    lines = open(cfg.path, encoding="utf-8", errors="replace").read().splitlines()
    for m in cfg.mappings.values():
        try:
            check_dest_parent(m.dest)
        except ConfigError as exc:
            text = str(exc).partition(", and reconcile makes only")[0].partition(": give a folder")[0]
            cfg.problems.append(Problem(cfg.path, line_of(lines, f"mapping.{m.name}", "dest"),
                                        f"mapping.{m.name}.dest", f"{text}; apply refuses it",
                                        "mount the disk or correct the path (reconcile makes only the "
                                        "destination's last folder)", warning=True, mapping=m.name))
