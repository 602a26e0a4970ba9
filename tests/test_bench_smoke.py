"""CI runs the whole benchmark suite at its small size, so it cannot rot.
Timings are not checked here: only that every case ran and was reported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CASE_TITLES = ("local: no-change plan", "hashing: one", "sftp: (a) first sync", "sftp: (b) no-change run",
               "sftp: (c) one", "sftp: (d) rename", "s3: first sync", "s3: no-change run",
               "s3: rename of a folder", "s3: one", "controls: --bwlimit 2M over 3 s to SFTP",
               "controls: --bwlimit 2M over 3 s to S3", "usb: no-change plan",
               "rtt-sftp: first sync", "rtt-sftp: no-change run", "rtt-sftp: rename of a folder",
               "rtt-s3: first sync", "rtt-s3: no-change run", "rtt-s3: rename of a folder")


def test_bench_suite_runs_at_small_size(tmp_path):
    out = tmp_path / "benchmarks.md"
    env = {**os.environ, "RECONCILE_BENCH_ROOT": str(tmp_path / "bench")}
    p = subprocess.run([sys.executable, "-m", "bench", "--size", "small", "--output", str(out)], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=1500)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    report = out.read_text()
    assert "Cases that failed" not in report
    for title in CASE_TITLES:
        assert f"### {title}" in report, title
    assert report.count("| reconcile") >= len(CASE_TITLES)
    assert (tmp_path / "rtt-sweep.svg").read_text().lstrip().startswith("<?xml")  # the RTT sweep drawn


def test_the_delay_proxy_keeps_order_and_counts_waits():
    # a client that waits for each reply waits once per request; a pipelined burst once
    import socket
    import threading

    from bench.delay import DelayProxy

    server = socket.create_server(("127.0.0.1", 0))

    def echo() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    threading.Thread(target=echo, daemon=True).start()
    proxy = DelayProxy(server.getsockname()[1], rtt_ms=40)
    try:
        with socket.create_connection(("127.0.0.1", proxy.port)) as c:
            for i in range(3):
                c.sendall(b"ping %d" % i)
                assert c.recv(100) == b"ping %d" % i
            burst = bytes(range(256)) * 4096  # 1 MiB in many chunks, back in order
            c.sendall(burst)
            got = b""
            while len(got) < len(burst):
                got += c.recv(1 << 16)
            assert got == burst
        connections, waits, up, down = proxy.counts()
        assert (connections, waits, up, down) == (1, 3, len(burst) + 18, len(burst) + 18)
    finally:
        proxy.close()
        server.close()


def test_alternate_takes_turns_and_runs_before_each(monkeypatch):
    # a slow spell of the host must fall on every tool alike, not on one tool's block of runs
    from bench import common

    order: list[str] = []
    monkeypatch.setattr(common, "run_timed", lambda argv, env=None: order.append(argv[0]) or common.Run(1.0, 0, "", ""))
    befores: list[int] = []
    a, b = common.alternate([("A", ["a"]), ("B", ["b"])], 3, befores.append)
    assert order == ["a", "b"] * 3
    assert befores == [0, 0, 1, 1, 2, 2]
    assert (a.tool, b.tool, len(a.runs), len(b.runs)) == ("A", "B", 3, 3)


def test_pinned_code_is_byte_compiled_like_an_installed_package(tmp_path, monkeypatch):
    # the timed runs must not compile every module afresh (PYTHONDONTWRITEBYTECODE)
    from bench import common

    monkeypatch.setattr(common, "ROOT", str(tmp_path))
    monkeypatch.setattr(common, "PINNED", [])
    monkeypatch.setenv("PYTHONPATH", "")
    common.pin_code("HEAD")
    code = tmp_path / "code" / "reconcile"
    sources = {p.relative_to(code).with_suffix("") for p in code.rglob("*.py")}
    compiled = {(p.parent.parent / p.name.split(".")[0]).relative_to(code) for p in code.rglob("__pycache__/*.pyc")}
    assert sources and sources <= compiled


def test_a_re_render_keeps_the_sections_written_below_the_mark(tmp_path):
    from bench.report import KEPT_MARK, write

    page = tmp_path / "benchmarks.md"
    page.write_text(f"# old figures\n\n{KEPT_MARK}\n\n## RTT sweep\n\n| rtt | ratio |\n")
    write(str(page), "small", [], [], {"python": "3"}, "", 60.0)
    text = page.read_text()
    assert "# old figures" not in text  # the generated part is new
    assert text.count(KEPT_MARK) == 1
    assert text.endswith(f"{KEPT_MARK}\n\n## RTT sweep\n\n| rtt | ratio |\n")
