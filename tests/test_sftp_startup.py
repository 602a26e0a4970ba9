"""What importing the SFTP remote costs at every start: paramiko comes in
without importlib.metadata (email, a scan of every path entry), and still
knows its own version (its SSH client banner carries it)."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return out.split()


def test_importing_the_sftp_remote_leaves_importlib_metadata_out():
    code = ("import sys; from reconcile.remotes.sftp import SftpRemote; "
            "print('importlib.metadata' in sys.modules, 'email' in sys.modules)")
    assert _run(code) == ["False", "False"]


def test_paramiko_knows_its_version_and_the_real_metadata_module_is_back():
    code = ("import sys; from reconcile.remotes.sftp.loader import paramiko; import paramiko.transport as t; "
            "import importlib.metadata as m; "
            "print(paramiko.__version__, t.Transport._CLIENT_ID, m.version('paramiko'), "
            "type(m).__name__, hasattr(m, 'entry_points'))")
    version, client_id, real, kind, full = _run(code)
    assert version == real and client_id == f"paramiko_{real}"
    assert (kind, full) == ("module", "True")


def test_the_light_module_answers_as_the_real_one():
    code = ("from reconcile.remotes.sftp.loader import _Metadata; m = _Metadata('importlib.metadata'); "
            "light = m.version('msgpack'), callable(m.distributions); "
            "import importlib.metadata as real; print(*light, real.version('msgpack'))")
    light, has_more, real = _run(code)
    assert light == real and has_more == "True"


def test_the_command_path_leaves_logging_handlers_out_until_a_log_file_is_asked():
    code = ("import sys; import reconcile.cli, reconcile.jobs, reconcile.logs, reconcile.engine.run, reconcile.apply; "
            "from reconcile.remotes.sftp import SftpRemote; print('logging.handlers' in sys.modules)")
    assert _run(code) == ["False"]
