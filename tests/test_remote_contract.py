"""The remote contract is written down once (remotes/base.py, issue 20): every
remote inherits it, the retry wrapper spells out every method of it, and the
engine and apply call it without probing for methods. The behaviour of each
method on real servers is tests/test_conformance.py's."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import reconcile
from reconcile.remotes.base import Remote
from reconcile.remotes.local import LocalRemote
from reconcile.remotes.retry import RetryingRemote
from reconcile.remotes.s3 import S3Remote
from reconcile.remotes.sftp import SftpRemote

PACKAGE = Path(reconcile.__file__).parent
REMOTES = [LocalRemote, SftpRemote, S3Remote]


def contract_methods() -> list[str]:
    return [name for name, member in vars(Remote).items()
            if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, property))
            and name != "from_url"]


@pytest.mark.parametrize("cls", REMOTES, ids=lambda c: c.__name__)
def test_every_remote_inherits_the_contract_and_implements_all_of_it(cls):
    assert issubclass(cls, Remote)
    assert not cls.__abstractmethods__
    assert cls.from_url.__func__ is not Remote.from_url.__func__


def test_the_retry_wrapper_spells_out_every_method_of_the_contract():
    # a method added to Remote and forgotten here would run without retries
    missing = [name for name in contract_methods() if name not in vars(RetryingRemote)]
    assert missing == []
    assert "__getattr__" not in vars(RetryingRemote)


@pytest.mark.parametrize("module", sorted(str(p.relative_to(PACKAGE)) for p in (PACKAGE / "engine").glob("*.py"))
                         + ["apply.py"])
def test_the_engine_and_apply_never_probe_a_remote_for_methods(module):
    tree = ast.parse((PACKAGE / module).read_text())
    probes = [f"line {node.lineno}" for node in ast.walk(tree)
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "hasattr") and node.args
              and "remote" in ast.unparse(node.args[0])]
    assert probes == []


def _kinds_of_options_read(files) -> set[str]:
    """the kinds' own options a module reads: `X.options.sftp`, `options.s3`, ..."""
    read = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("sftp", "s3") and \
                    ast.unparse(node.value).split(".")[-1] == "options":
                read.add(node.attr)
    return read


@pytest.mark.parametrize("kind, files", [
    ("sftp", sorted((PACKAGE / "remotes" / "sftp").glob("*.py"))),
    ("s3", sorted((PACKAGE / "remotes" / "s3").glob("*.py"))),
    (None, [PACKAGE / "remotes" / "local.py"]),
], ids=["sftp", "s3", "local"])
def test_each_remote_reads_its_own_options_and_no_other_kinds(kind, files):
    # RemoteOptions holds what every remote reads, then each kind's own class (SftpOptions, S3Options)
    assert _kinds_of_options_read(files) == ({kind} if kind else set())
