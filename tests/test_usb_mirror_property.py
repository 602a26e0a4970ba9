"""The mirror property on real exFAT and NTFS disks (tests/servers_usb.py):
random trees under the random changes of test_mirror_property (case-only
renames included) end in an exact mirror (bytes, and mtimes at the disk's
precision) after each apply, and a second plan is empty.

Two source names that differ only in case are one name on exFAT: a reported
collision, left out (test_usb_names.py). So before each apply the source
keeps only the first of such twins, and the property holds for the rest.
The names include capitals, so case-only renames and twins are drawn often."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

import tests.test_mirror_property as base
from reconcile.names import fold
from reconcile.remotes.base import RemoteOptions, SftpOptions
from tests.mirror import run, tree
from tests.servers_sftp import sftp_url

NAMES = ["a", "b", "A", "B", "a-b", "a0", "c d"]
EXAMPLES = int(os.environ.get("RECONCILE_USB_PROPERTY_EXAMPLES", "25"))
PRECISION = {"exfat": 10**9, "ntfs": 100, "sftp-exfat": 10**9}


def drop_case_twins(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        seen: set[str] = set()
        for name in sorted(dirnames + filenames):
            if fold(name) in seen:
                p = Path(dirpath) / name
                shutil.rmtree(p) if p.is_dir() else p.unlink()
                if name in dirnames:
                    dirnames.remove(name)
            seen.add(fold(name))


def differences(dst: dict, src: dict, precision: int) -> list[str]:
    """the paths where the mirror differs from the source"""
    bad = sorted(dst.keys() ^ src.keys())
    for k in dst.keys() & src.keys():
        d, s = dst[k], src[k]
        if d[:2] != s[:2] or (d[0] == "f" and abs(d[2] - s[2]) >= precision):
            bad.append(k)
    return bad


def destination(fs: str, request, tmp: Path) -> tuple[Path, str, RemoteOptions | None]:
    """(the folder on the disk, the URL reconcile is given, its options): the
    disk itself, or an SFTP server whose disk it is (sftp/probe.py)"""
    disk = request.getfixturevalue(f"{fs.removeprefix('sftp-')}_disk")
    folder = disk.fresh_folder()
    if not fs.startswith("sftp-"):
        return folder, str(folder), None
    server = request.getfixturevalue("sshd_server")
    kh = server.write_known_hosts(tmp / "known_hosts")
    return folder, sftp_url(server, folder), RemoteOptions(sftp=SftpOptions(key=server.user_key, known_hosts=kh))


@pytest.mark.parametrize("fs", ["exfat", "ntfs", "sftp-exfat"])
def test_random_changes_end_in_exact_mirror_on_usb_disks(fs, request, tmp_path):

    @settings(max_examples=EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(setup=st.lists(base.change_st, min_size=1, max_size=8),
           rounds=st.lists(st.lists(base.change_st, min_size=1, max_size=6), min_size=1, max_size=4))
    # found on exFAT in CI: a file that becomes a folder, a case-only rename and a swap in one round
    @example(setup=[("create", 0, 0, 0, b""), ("create", 1, 1, 0, b"")],
             rounds=[[("create", 0, 0, 0, b""), ("create", 0, 0, 0, b""), ("create", 0, 0, 0, b""),
                      ("dir_to_file", 0, 0, 0, b""), ("rename_case", 1, 0, 0, b""), ("swap", 0, 0, 0, b"")],
                     [("create", 0, 0, 0, b"")]])
    # found on NTFS in CI: a folder that becomes a file, an older edit, a case-only rename and a swap
    @example(setup=[("create", 0, 0, 0, b"")],
             rounds=[[("create", 0, 59, 0, b""), ("dir_to_file", 0, 0, 0, b""), ("modify_older", 121, 0, 0, b""),
                      ("rename_case", 5, 0, 0, b""), ("swap", 19, 413, 0, b"")],
                     [("create", 0, 0, 0, b"")]])
    # found on exFAT with the names a, b, A, B, a-b: the file 'a' moves into a folder 'A' (here a -> b/a,
    # b -> a, a -> A)
    @example(setup=[("create", 0, 0, 0, b"")],
             rounds=[[("move_file", 0, 1, 1, b""), ("move_dir", 0, 0, 0, b""), ("rename_case", 1, 0, 0, b"")],
                     [("create", 0, 0, 0, b"")]])
    def prop(setup, rounds):
        with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
            mp.setattr(base, "NAMES", NAMES)
            tmp = Path(tmp)
            src, state = tmp / "src", tmp / "state"
            dst, url, options = destination(fs, request, tmp_path)
            src.mkdir()
            clock = base.Clock()
            for c in setup:
                base.change(src, c, clock)
            for round_changes in rounds:
                drop_case_twins(src)
                result = run(src, url, state, options=options, delete=True, max_delete=10**9,
                             allow_empty_source=True)
                assert result.outcome.complete and not result.not_stored, (result.outcome.results,
                                                                           result.not_stored)
                assert result.outcome.count("skipped") == 0, [o.to_json() for o in result.plan.ops]
                assert differences(tree(dst), tree(src), PRECISION[fs]) == []
                again = run(src, url, state, mode="plan", options=options, delete=True, max_delete=10**9,
                            allow_empty_source=True)
                assert again.plan.ops == [], [o.to_json() for o in again.plan.ops]
                for c in round_changes:
                    base.change(src, c, clock)

    prop()
