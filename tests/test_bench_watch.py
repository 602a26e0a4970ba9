"""python -m bench --only watch: bench/case_watch.py's section goes below the
page's KEPT_MARK line, in place of an earlier one; the page above is kept,
and a whole run leaves the (long) watch case out."""

from __future__ import annotations

from bench.__main__ import wanted
from bench.case_watch import HEADING, put_below_mark
from bench.report import KEPT_MARK


def test_the_watch_section_replaces_its_earlier_self_below_the_mark(tmp_path):
    page = tmp_path / "benchmarks.md"
    above = "# Benchmarks\n\n### local: no-change plan\n\n| a | b |\n"
    other = "### reconcile watch\n\nwritten by hand\n"
    page.write_text(f"{above}\n{KEPT_MARK}\n\n{other}\n### Round-trip time\n\nrtt rows\n")
    put_below_mark(str(page), f"{HEADING}\n\nfirst figures\n")
    put_below_mark(str(page), f"{HEADING}\n\nsecond figures\n")
    text = page.read_text()
    assert text.startswith(above) and text.count(KEPT_MARK) == 1
    assert "second figures" in text and "first figures" not in text and text.count(HEADING) == 1
    assert "written by hand" in text and "rtt rows" in text


def test_a_whole_run_leaves_the_watch_case_out():
    assert not wanted(set(), "watch") and wanted({"watch"}, "watch")
    assert wanted(set(), "local") and not wanted({"watch"}, "local")
