"""The tidy-up of an SFTP destination's temp files meets a temp-named folder
holding a tree about a thousand folders deep (anyone who can write the
destination on the server can make one): removing it recursed until a
RecursionError, which reached the run as a lost connection, was retried for
the whole --retry-for and then ignored; every run that wrote waited out its
retries. Now that folder is left as it is, at once."""

from __future__ import annotations

import subprocess
from urllib.parse import unquote, urlsplit
from pathlib import Path

from reconcile.entry import TEMP_MARK
from tests.cli import reconcile
from tests.mirror import write
from tests.test_tidy_deep_temp import DEPTH, _deep


def test_a_deep_tree_in_a_temp_named_folder_on_sftp_is_left_without_retries(sftp_dest, tmp_path):
    src = tmp_path / "src"
    write(src / "a.txt", b"a", 1_600_000_000 * 10**9)
    root = Path(unquote(urlsplit(sftp_dest.url).path))
    planted = root / f"{TEMP_MARK}planted"
    _deep(planted)
    shallow = root / f"{TEMP_MARK}shallow"  # an ordinary leftover temp folder is still removed
    (shallow / "x" / "y").mkdir(parents=True)
    (shallow / "x" / "y" / "f").write_bytes(b"f")
    try:
        p = reconcile("apply", src, sftp_dest.url, "--state-dir", tmp_path / "state", "--retry-for", "1m",
                      *sftp_dest.cli_args, check=0)
        assert p.returncode == 0, p.stderr
        assert "retry" not in p.stderr.lower() and "connection lost" not in p.stderr, p.stderr
        assert (root / "a.txt").read_bytes() == b"a"
        assert planted.is_dir() and not shallow.exists()
        assert DEPTH > 1000
    finally:
        subprocess.run(["rm", "-rf", str(planted)], check=True)
