"""Issue 18.6: the README's one install command works on a stock system
Python (Debian 12's /usr/bin/python3 is externally managed, PEP 668), run
exactly as the README writes it, in an empty home folder, from a fresh copy
of the repository, with only the system's PATH."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"


BACKUP = "/mnt/backup/Pictures"


def readme_install_command() -> str:
    """the first of the README's two commands: install, then mirror ~/Pictures to BACKUP."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Two commands\n", 1)[1]
    block = re.search(r"```\n(.*?)\n```", section, re.S)
    assert block, "the README's Two commands section has no command block"
    assert block.group(1).endswith(f" apply ~/Pictures {BACKUP}"), block.group(1)
    return block.group(1)


def fresh_copy(dest: Path) -> Path:
    """the tracked files only, as a clone has them (no .venv, no build leftovers)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in files.decode().split("\0"):
        if name and (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason="no system Python at /usr/bin/python3")
def test_readme_install_command_works_with_the_system_python(tmp_path):
    home, clone = tmp_path / "home", fresh_copy(tmp_path / "clone")
    home.mkdir()
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CONSTRAINT", "PIP_CERT",
                 "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        if name in os.environ:
            env[name] = os.environ[name]  # how this machine reaches PyPI, if it is told
    assert subprocess.run(["python3", "-c", "import sys; print(sys.executable)"], env=env, capture_output=True,
                          text=True).stdout.strip() == SYSTEM_PYTHON
    (home / "Pictures").mkdir()
    (home / "Pictures" / "first.jpg").write_bytes(b"first photo")
    backup = tmp_path / "mnt-backup" / "Pictures"  # the README's /mnt/backup/Pictures, kept in tmp_path
    backup.parent.mkdir()  # the backup disk, mounted: reconcile makes only the last folder, Pictures
    command = readme_install_command().replace(BACKUP, str(backup))
    p = subprocess.run(["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert (backup / "first.jpg").read_bytes() == b"first photo"
    assert "ok: 1 done" in p.stderr, p.stderr[-3000:]

    assert "reconcile" in (home / ".bashrc").read_text()  # tab completion, for bash here

    # a new login shell on Debian puts ~/.local/bin on PATH: the command is there
    login = {**env, "PATH": f"{home}/.local/bin:/usr/bin:/bin"}
    src, dst = tmp_path / "Pictures", tmp_path / "backup"
    src.mkdir()
    (src / "a.jpg").write_bytes(b"photo")
    p = subprocess.run(["reconcile", "apply", str(src), str(dst)], env=login, capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr
    assert (dst / "a.jpg").read_bytes() == b"photo"
    assert p.stderr.startswith("ok: 1 done"), p.stderr
