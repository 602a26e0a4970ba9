"""Find or install the peers: rsync, scp, rclone, aws-cli, xxh128sum."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from bench.common import log

APT = {"rsync": "rsync", "rclone": "rclone", "xxh128sum": "xxhash", "scp": "openssh-client",
       "ssh": "openssh-client"}


def ensure_tools(names: list[str]) -> dict[str, str | None]:
    """path of each tool, installing the missing ones (apt-get, pip)."""
    missing = [n for n in names if n != "aws" and not shutil.which(n)]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        pkgs = sorted({APT[n] for n in missing if n in APT})
        log(f"installing {' '.join(pkgs)} with apt-get")
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *pkgs], capture_output=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    found = {n: shutil.which(n) for n in names if n != "aws"}
    if "aws" in names:
        found["aws"] = _aws()
    return found


def _aws() -> str | None:
    """aws-cli next to this interpreter, pip-installed when missing."""
    here = os.path.join(os.path.dirname(sys.executable), "aws")
    if os.path.exists(here):
        return here
    log("installing awscli with pip")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "awscli"], capture_output=True)
    return here if os.path.exists(here) else shutil.which("aws")


def version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0].strip() if text else "?"


def versions(tools: dict[str, str | None]) -> dict[str, str]:
    import paramiko
    import boto3
    import xxhash

    v = {
        "python": sys.version.split()[0],
        "reconcile": _git_head(),
        "paramiko": paramiko.__version__, "boto3": boto3.__version__, "xxhash": xxhash.VERSION,
        "rsync": version(["rsync", "--version"]),
        "openssh": version(["ssh", "-V"]),
        "rclone": version(["rclone", "version"]),
        "aws-cli": version([tools.get("aws") or "aws", "--version"]),
        "xxh128sum": version(["xxh128sum", "--version"]),
    }
    from tests.servers_s3 import find_weed
    weed = find_weed()
    v["SeaweedFS"] = version([weed, "version"]) if weed else "not found"
    return v


def _git_head() -> str:
    from bench.common import PINNED, REPO

    if PINNED:
        return f"{PINNED[0][:80]} (exported with `git archive`, working tree not used)"
    out = subprocess.run(["git", "-C", REPO, "log", "-1", "--format=%h %s"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "reconcile"],
                           capture_output=True, text=True).stdout.split("\n")
    changed = [line[3:] for line in dirty if line.strip()]
    note = f" (plus uncommitted edits to {', '.join(changed)})" if changed else ""
    return out.stdout.strip()[:80] + note
