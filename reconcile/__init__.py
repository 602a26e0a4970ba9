"""reconcile: keep a remote copy of local folders exactly in step."""

__version__ = "0.1.0"
