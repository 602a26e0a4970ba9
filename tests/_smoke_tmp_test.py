import os, subprocess, sys, time
def test_cli(sftp_dest, tmp_path, run_env):
    src = tmp_path / "src"
    for i in range(300):
        d = src / f"d{i%17}"; d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(os.urandom(1000 + i))
    (src / "big").write_bytes(os.urandom(70 << 20))
    env = dict(run_env, **sftp_dest.env)
    for attempt in range(3):
        t0 = time.time()
        p = subprocess.run([sys.executable, "-m", "reconcile", "apply", str(src), sftp_dest.url, *sftp_dest.cli_args,
                            "--state-dir", str(tmp_path / "st")], capture_output=True, text=True, env=env)
        print(attempt, p.returncode, round(time.time() - t0, 2), p.stdout[-600:], p.stderr[-1500:])
    os.rename(src / "d3", src / "moved")
    p = subprocess.run([sys.executable, "-m", "reconcile", "apply", str(src), sftp_dest.url, *sftp_dest.cli_args,
                        "--state-dir", str(tmp_path / "st")], capture_output=True, text=True, env=env)
    print("move", p.returncode, p.stdout[-800:], p.stderr[-800:])
    p = subprocess.run(["diff", "-r", str(src), str(tmp_path / "sftp-root")], capture_output=True, text=True)
    print("diff", p.returncode, p.stdout[:500])
    kh = tmp_path / "kh2"; kh.write_text("")
    args = [a if a != sftp_dest.cli_args[3] else str(kh) for a in sftp_dest.cli_args]
    p = subprocess.run([sys.executable, "-m", "reconcile", "apply", str(src), sftp_dest.url, *args,
                        "--state-dir", str(tmp_path / "st2")], capture_output=True, text=True, env=env)
    print("unknown host", p.returncode, p.stdout[-500:], p.stderr[-500:])
