"""The RTT sweep drawn: one panel per case, seconds against round-trip time,
one line per tool. matplotlib is a bench-only dependency (pip install matplotlib)."""

from __future__ import annotations

import re
import subprocess
import sys

from bench.common import Case, log

PANELS = (("rtt-sftp", "first sync"), ("rtt-sftp", "no-change"), ("rtt-sftp", "rename"),
          ("rtt-s3", "first sync"), ("rtt-s3", "no-change"), ("rtt-s3", "rename"))


COLORS = (("reconcile", "black"), ("rsync", "tab:green"), ("rclone", "tab:blue"), ("aws", "tab:red"))


def points(cases: list[Case]) -> dict[tuple[str, str], dict[str, list[tuple[int, float]]]]:
    """(group, case kind) -> tool -> [(rtt ms, median s)]."""
    out: dict = {}
    for c in cases:
        m = re.search(r"RTT (\d+) ms", c.name)
        kind = next((k for g, k in PANELS if g == c.group and c.name.startswith(k)), None)
        if not m or kind is None:
            continue
        for s in c.series:
            if s.runs:
                out.setdefault((c.group, kind), {}).setdefault(s.tool, []).append((int(m.group(1)), s.median))
    return out


def _pyplot():
    """matplotlib.pyplot, pip-installed when missing (as profile.py does py-spy); None if that fails."""
    try:
        import matplotlib
    except ImportError:
        log("installing matplotlib with pip (bench only)")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], capture_output=True)
        try:
            import matplotlib
        except ImportError:
            return None
    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"  # text as text: a small, greppable SVG
    import matplotlib.pyplot as plt

    return plt


def draw(cases: list[Case], path: str) -> bool:
    """the figure into path (.svg or .png); False where matplotlib is missing or there is nothing to draw."""
    data = points(cases)
    if not data:
        return False
    plt = _pyplot()
    if plt is None:
        log("no RTT plot: matplotlib could not be installed (pip install matplotlib)")
        return False
    panels = [p for p in PANELS if p in data]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5), squeeze=False)
    for ax, (group, kind) in zip(axes.flat, PANELS):
        if (group, kind) not in data:
            ax.set_visible(False)
            continue
        for tool, pts in sorted(data[(group, kind)].items()):
            pts.sort()
            ours = tool.startswith("reconcile")
            color = next((c for name, c in COLORS if tool.startswith(name)), None)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o" if ours else "--s", label=tool, color=color,
                    linewidth=2.0 if ours else 1.2, markersize=4)
        ax.set_title(f"{group.removeprefix('rtt-').upper()}: {kind}", fontsize=10)
        ax.set_xlabel("round-trip time (ms)")
        ax.set_ylabel("seconds (median)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("reconcile and its peers through a delay proxy (lower is better; log scale; "
                 "a peer stopped at 60 s shows 60)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, metadata={"Date": None} if path.endswith(".svg") else None)
    plt.close(fig)
    log(f"wrote {path} ({len(panels)} panels)")
    return True


def table(cases: list[Case]) -> list[str]:
    """the sweep in one markdown table: per case and RTT, each tool's median
    and what the proxy saw, and reconcile's ratio to the first peer."""
    rows = ["| Case | RTT | reconcile | peers (median; connections, waits) | ratio to the first peer |",
            "|---|---|---|---|---|"]
    for c in cases:
        m = re.search(r"^(.*), RTT (\d+) ms$", c.name)
        if not m or not c.series or not c.group.startswith("rtt-"):
            continue
        ours, peers = c.series[0], c.series[1:]
        seen = lambda s: f"{s.median:.2f} s; {s.note.replace(' connections', ' conn.').replace(' waits', ' w.')}"
        ratio = f"{ours.median / peers[0].median:.2f}×" if peers else "—"
        rows.append(f"| {c.group.removeprefix('rtt-').upper()} {m.group(1)} | {m.group(2)} ms | {seen(ours)} | "
                    + "<br>".join(f"{p.tool}: {seen(p)}" for p in peers) + f" | {ratio} |")
    return rows
