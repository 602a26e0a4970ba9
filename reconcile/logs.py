"""--log-file and --log-format: what a scheduled run leaves behind.

While a run goes, sys.stderr is replaced by a tee that turns every line the
run prints (warnings, failures, the error that ended it) into a log record.
Each run then ends with exactly one summary record: result, exit code,
counts, bytes and duration. Text goes to the file (rotated); json is one
object per line, to the file or, without --log-file, to stderr instead of
the usual text. Known secrets are masked in every record.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from reconcile import portable
from reconcile.errors import (ConfigError, LockBusy, ReconcileError, SafetyRefusal, Unreachable)
from reconcile.shown import json_text

MAX_BYTES = 10 * 1000 * 1000
BACKUPS = 5
SECRET_ENV = ("RECONCILE_SFTP_PASSWORD", "RECONCILE_SSH_KEY_PASSPHRASE", "AWS_SECRET_ACCESS_KEY",
              "AWS_SESSION_TOKEN")
URL_PASSWORD = re.compile(r"(\w+://[^/:@\s]*:)[^/\s]*@")  # up to the last @: a password may hold one
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# the summary line cli prints itself: it becomes the summary record's message
SUMMARY_PREFIXES = ("plan: ", "ok: ", "partial: ")
MAPPING_TAG = re.compile(r"^\[[^\]\n]*\] ")  # under --all: "[photos] ok: .."
RESULTS = {0: "ok", 1: "error", 2: "config-error", 3: "partial", 4: "refused", 5: "locked", 130: "interrupted"}


@dataclass
class LogSettings:
    file: str | None = None
    format: str = "text"

    @property
    def active(self) -> bool:
        return self.file is not None or self.format == "json"


def mask(text: str) -> str:
    """known secrets out of a message: values of secret variables, URL passwords."""
    for name in SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return URL_PASSWORD.sub(r"\1***@", text)


class _MaskFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask(record.getMessage())
        record.args = None
        fields = getattr(record, "fields", None)
        if fields:
            record.fields = {k: mask(v) if isinstance(v, str) else v for k, v in fields.items()}
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
                    + f".{int(record.msecs):03d}" + time.strftime("%z", time.localtime(record.created)),
            "level": record.levelname.lower(),
        }
        doc.update(getattr(record, "fields", {}))
        doc["message"] = record.getMessage()
        return json_text(doc)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        fields = dict(getattr(record, "fields", {}))
        prefix = " ".join(str(fields.pop(k)) for k in ("command", "mapping") if fields.get(k))
        if fields.get("event") == "summary":
            shown = " ".join(f"{k}={v}" for k, v in fields.items()
                             if k not in ("event", "source", "dest") and v is not None)
            record = logging.makeLogRecord({**record.__dict__, "msg": f"summary {shown} | {record.getMessage()}"})
        return _with_prefix(super().format(record), prefix)


def _with_prefix(line: str, prefix: str) -> str:
    # "date time LEVEL message" -> "date time LEVEL prefix: message"
    parts = line.split(" ", 3)
    if not prefix or len(parts) < 4:
        return line
    return f"{parts[0]} {parts[1]} {parts[2]} {prefix}: {parts[3]}"


def _private_rotating_handler(path: str) -> logging.Handler:
    """a rotating file handler whose new file after a rotation is 0600 too,
    whatever the umask. logging.handlers (pickle, queue, ...) is imported
    here, by a run that logs to a file, not at every start."""
    import logging.handlers

    class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
        def _open(self):
            fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND | portable.BINARY, 0o600)
            return open(fd, "a", encoding=self.encoding, errors=self.errors)

    return PrivateRotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")


def open_file_handler(path: str, fmt: str) -> logging.Handler:
    path = os.path.abspath(os.path.expanduser(path))
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        # paths in the log are private: create it 0600 before the handler opens it
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | portable.BINARY, 0o600))
        handler = _private_rotating_handler(path)
    except OSError as exc:
        raise ConfigError(f"cannot write the log file {path}: {exc.strerror}; "
                          "pass --log-file with a writable path") from None
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    return handler


class _StderrTee(io.TextIOBase):
    """stands in for sys.stderr: each complete line becomes a log record, and
    is passed on to the real stderr unless json replaces it there."""

    def __init__(self, real, passthrough: bool, on_line: Callable[[str], None]) -> None:
        self.real = real
        self.passthrough = passthrough
        self.on_line = on_line
        self._buf = ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False  # no progress bar redraws in a log

    def write(self, s: str) -> int:
        if self.passthrough:
            self.real.write(s)
        self._buf += s
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            self._emit(line)
        return len(s)

    def _emit(self, line: str) -> None:
        line = ANSI.sub("", line).rsplit("\r", 1)[-1].rstrip()
        if line:
            self.on_line(line)

    def flush(self) -> None:
        if self.passthrough:
            self.real.flush()

    def drain(self) -> None:
        if self._buf:
            self._emit(self._buf)
            self._buf = ""


@dataclass
class RunLog:
    """one run of one mapping (or SOURCE DEST pair) under logging."""

    settings: LogSettings
    command: str
    mapping: str | None
    source: str | None
    dest: str | None
    state_dir: str | None = None
    started: float = field(default_factory=time.time)
    error: ReconcileError | None = None
    summary_text: str | None = None

    def __post_init__(self) -> None:
        self.logger = logging.getLogger(f"reconcile.run.{id(self)}")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        self._t0 = time.monotonic()
        self._tee: _StderrTee | None = None
        self._real_stderr = sys.stderr

    def __enter__(self) -> "RunLog":
        if not self.settings.active:
            return self
        if self.settings.file:
            self.logger.addHandler(open_file_handler(self.settings.file, self.settings.format))
        else:
            stream = logging.StreamHandler(self._real_stderr)
            stream.setFormatter(JsonFormatter())
            self.logger.addHandler(stream)
        for h in self.logger.handlers:
            h.addFilter(_MaskFilter())
        self._record(logging.INFO, "start", f"start: {self.source} -> {self.dest}" if self.dest else "start")
        self._tee = _StderrTee(self._real_stderr, self.settings.file is not None, self._line)
        sys.stderr = self._tee
        return self

    def __exit__(self, *exc) -> None:
        if self._tee is not None:
            self._tee.drain()
            sys.stderr = self._real_stderr
        for h in list(self.logger.handlers):
            self.logger.removeHandler(h)
            h.close()

    def guard(self, fn: Callable[[], int]) -> Callable[[], int]:
        """fn, remembering the error that ends it (for the summary's result)."""

        def run() -> int:
            try:
                return fn()
            except ReconcileError as exc:
                self.error = exc
                raise

        return run

    def finish(self, code: int) -> None:
        if not self.settings.active:
            return
        if self._tee is not None:
            self._tee.drain()
        fields = self._summary_fields(code)
        level = logging.INFO if code == 0 else logging.ERROR
        message = self.summary_text or (str(self.error) if self.error else fields["result"])
        self._record(level, "summary", message, fields)

    # --- pieces ------------------------------------------------------------------------

    def _line(self, line: str) -> None:
        if MAPPING_TAG.sub("", line, count=1).startswith(SUMMARY_PREFIXES):
            self.summary_text = line
            return
        level = logging.INFO
        if line.startswith("warning:"):
            level = logging.WARNING
        elif line.startswith(("reconcile:", "failed:")):
            level = logging.ERROR
        self._record(level, "output", line)

    def _record(self, level: int, event: str, message: str, extra: dict | None = None) -> None:
        fields = {"event": event, "command": self.command, "mapping": self.mapping}
        if event != "output":
            fields.update({"source": self.source, "dest": self.dest})
        fields.update(extra or {})
        self.logger.log(level, "%s", message, extra={"fields": fields})

    def _summary_fields(self, code: int) -> dict[str, Any]:
        last = self._last_run() if self.command == "apply" else None
        return {
            "result": self._result_word(code, last),
            "exit_code": code,
            "done": last.get("done", 0) if last else 0,
            "failed": last.get("failed", 0) if last else 0,
            "bytes": last.get("bytes", 0) if last else 0,
            "bytes_saved_move": last.get("bytes_saved", {}).get("move", 0) if last else 0,
            "bytes_saved_touch": last.get("bytes_saved", {}).get("touch", 0) if last else 0,
            "bytes_saved_delta": last.get("bytes_saved", {}).get("delta", 0) if last else 0,
            "duration_s": round(time.monotonic() - self._t0, 3),
        }

    def _result_word(self, code: int, last: dict | None) -> str:
        if isinstance(self.error, Unreachable):
            return "unreachable"
        if isinstance(self.error, (SafetyRefusal, LockBusy, ConfigError)):
            return RESULTS[self.error.exit_code]
        if last and code in (0, 3):
            return last.get("result", RESULTS.get(code, "error"))
        return RESULTS.get(code, "error")

    def _last_run(self) -> dict | None:
        """the engine's own record of this run, the one `status` reads too."""
        if not (self.source and self.dest):
            return None
        from reconcile.statedir import StateDir

        try:
            state = StateDir.for_pair(os.path.abspath(os.path.expanduser(self.source)), self.dest,
                                      self.state_dir)
            with open(state.last_run, "rb") as f:
                record = json.loads(f.read())
        except (OSError, ValueError, ReconcileError):
            return None
        # a record from an earlier run says nothing about this one
        return record if record.get("started", 0) >= self.started - 1 else None
