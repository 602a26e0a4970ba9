"""Under CI=true a test skipped for want of a tool or server fails instead.

CI installs everything the suite needs (scripts/test), so a missing sshd,
SeaweedFS, setpriv, mount or systemd-analyze there means the suite did not
run what it claims. Skips for a capability the platform lacks by design
(S3 has no folders or symlinks, no fork on one core) stay skips."""

from __future__ import annotations

import os
import re

import pytest

# the reasons our skips give when something is not installed or not allowed
MISSING = re.compile(r"not installed|missing|is unavailable|not possible here|here for the wrapper|no system python",
                     re.I)


def strict() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not strict() or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if MISSING.search(reason):
        report.outcome = "failed"
        report.longrepr = f"CI=true: a missing tool or server fails the run instead of skipping: {reason}"
