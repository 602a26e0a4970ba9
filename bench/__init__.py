"""Benchmark suite: reconcile against rsync, scp, rclone and aws-cli.

Run `python -m bench --help`. Figures go to docs/benchmarks.md.
"""
