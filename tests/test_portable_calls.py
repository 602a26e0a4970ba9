"""No call Windows lacks is reachable on Windows without a guard.

Walks every module of the package (AST) for the os, signal, select and mmap
names Windows does not have, and the POSIX-only modules (fcntl, pwd...). Each
use must be unreachable on Windows, as decided by evaluating the guards
around it with Windows' values: sys.platform == "win32", os.name == "nt",
hasattr(os, X) false for the names below, portable's capabilities false; or
sit in a @posix_only function (it raises a clear bug error without fork), or
under a try that catches ImportError/AttributeError. A guard this evaluator
cannot decide does not count: write it plainly. It also finds os.open of a
file without O_BINARY (text mode on Windows).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import reconcile

PACKAGE = Path(reconcile.__file__).parent

MISSING = {
    "os": {"fork", "forkpty", "register_at_fork", "pread", "pwrite", "preadv", "pwritev", "sendfile",
           "splice", "copy_file_range", "getuid", "geteuid", "getgid", "getegid", "getgroups", "setuid",
           "seteuid", "setgid", "setsid", "setpgid", "getpgid", "killpg", "sched_getaffinity",
           "sched_setaffinity", "sysconf", "fpathconf", "statvfs", "fstatvfs", "chown", "lchown", "fchown",
           "mkfifo", "mknod", "nice", "getloadavg", "uname", "openpty", "wait", "wait3", "wait4", "waitid",
           "WIFSIGNALED", "WIFEXITED", "WTERMSIG", "WEXITSTATUS", "O_NOFOLLOW", "O_DIRECTORY", "O_CLOEXEC",
           "O_NONBLOCK", "posix_fadvise", "posix_fallocate", "fdatasync", "sync", "pipe2", "getpriority",
           "setpriority", "ttyname", "ctermid", "memfd_create"},
    "signal": {"SIGKILL", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGCHLD", "SIGPIPE", "SIGALRM", "SIGQUIT",
               "SIGSTOP", "SIGCONT", "SIGTSTP", "alarm", "pause", "setitimer", "pthread_kill",
               "pthread_sigmask", "sigwait", "siginterrupt"},
    "select": {"poll", "epoll", "kqueue", "POLLIN", "POLLOUT", "POLLHUP"},
    "mmap": {"MAP_PRIVATE", "MAP_ANONYMOUS", "MAP_SHARED"},
    "ctypes": {"CDLL"},  # CDLL(None), the C library of this process: POSIX only
    "time": {"tzset"},
    "shutil": {"chown"},
    "socket": {"AF_UNIX"},
}
POSIX_MODULES = {"fcntl", "pwd", "grp", "termios", "tty", "pty", "resource", "posix", "syslog", "crypt"}
# false on Windows: reconcile.portable's capabilities, and the functions built on them
FALSE_ON_WINDOWS = {"FORK", "PREAD", "DIR_FD", "FD_STAT", "NOFOLLOW", "SENDFILE", "COPY_RANGE", "PROC",
                    "MAP_PRIVATE",
                    "LINUX", "MACOS", "available", "quiet"}
TRUE_ON_WINDOWS = {"WINDOWS"}
CAUGHT = {"ImportError", "ModuleNotFoundError", "AttributeError", "NotImplementedError"}


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def on_windows(test: ast.AST) -> bool | None:
    """the value of a guard on Windows, or None where it cannot tell"""
    if isinstance(test, ast.BoolOp):
        values = [on_windows(v) for v in test.values]
        if isinstance(test.op, ast.And):
            return False if False in values else (True if all(v is True for v in values) else None)
        return True if True in values else (False if all(v is False for v in values) else None)
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        v = on_windows(test.operand)
        return None if v is None else not v
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        left, right, op = test.left, test.comparators[0], test.ops[0]
        value = {"sys.platform": "win32", "os.name": "nt"}.get(_dotted(left) or "")
        if isinstance(op, ast.In) and _dotted(right) == "os.supports_dir_fd":
            return False
        if value is not None and isinstance(right, ast.Constant):
            if isinstance(op, ast.Eq):
                return value == right.value
            if isinstance(op, ast.NotEq):
                return value != right.value
        if value is not None and isinstance(right, (ast.Tuple, ast.List, ast.Set)) \
                and isinstance(op, (ast.In, ast.NotIn)):
            inside = value in [e.value for e in right.elts if isinstance(e, ast.Constant)]
            return inside if isinstance(op, ast.In) else not inside
        return None
    if isinstance(test, ast.Call):
        name = _dotted(test.func) or ""
        if name == "sys.platform.startswith" and test.args and isinstance(test.args[0], ast.Constant):
            return "win32".startswith(test.args[0].value)
        if name == "hasattr" and len(test.args) == 2 and isinstance(test.args[1], ast.Constant):
            module = _dotted(test.args[0])
            return False if module in MISSING and test.args[1].value in MISSING[module] else None
        if name.rsplit(".", 1)[-1] in FALSE_ON_WINDOWS:
            return False
        return None
    name = (_dotted(test) or "").rsplit(".", 1)[-1]
    if name in FALSE_ON_WINDOWS:
        return False
    if name in TRUE_ON_WINDOWS:
        return True
    return None


def _leaves(body: list[ast.stmt]) -> bool:
    return bool(body) and isinstance(body[-1], (ast.Return, ast.Raise))


class Finder(ast.NodeVisitor):
    def __init__(self, path: str) -> None:
        self.path = path
        self.found: list[str] = []
        self.guarded = 0  # depth of guards around the node being visited
        self.aliases: dict[str, str] = {}  # local name -> "module.attr" for from-imports

    def report(self, node: ast.AST, what: str) -> None:
        if not self.guarded:
            self.found.append(f"{self.path}:{node.lineno}: {what}")

    def inside(self, nodes, guarded: bool) -> None:
        self.guarded += guarded
        for n in nodes if isinstance(nodes, list) else [nodes]:
            self.visit(n)
        self.guarded -= guarded

    def body(self, stmts: list[ast.stmt]) -> None:
        """statements after an 'if <true on Windows>: return' are unreachable there"""
        cut = False
        for s in stmts:
            self.inside(s, cut)
            if isinstance(s, ast.If) and not s.orelse and _leaves(s.body) and on_windows(s.test) is True:
                cut = True
                self.guarded += 1
        if cut:
            self.guarded -= 1

    def visit_Module(self, node: ast.Module) -> None:
        self.body(node.body)

    def visit_FunctionDef(self, node) -> None:
        posix_only = any((_dotted(d) or "").endswith("posix_only") for d in node.decorator_list)
        self.guarded += posix_only
        self.body(node.body)
        self.guarded -= posix_only

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        value = on_windows(node.test)
        self.guarded += value is False
        self.body(node.body)
        self.guarded -= value is False
        self.guarded += value is True
        self.body(node.orelse)
        self.guarded -= value is True

    visit_While = visit_If

    def visit_IfExp(self, node: ast.IfExp) -> None:
        self.visit(node.test)
        value = on_windows(node.test)
        self.inside(node.body, value is False)
        self.inside(node.orelse, value is True)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        stop = False  # an earlier operand decides the result on Windows: the rest never run
        for v in node.values:
            self.inside(v, stop)
            w = on_windows(v)
            stop = stop or (w is False if isinstance(node.op, ast.And) else w is True)

    def visit_Try(self, node: ast.Try) -> None:
        names = set()
        for h in node.handlers:
            types = h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]
            names |= {(_dotted(t) or "") for t in types if t is not None}
        self.inside(node.body, bool(names & CAUGHT))
        for part in (node.handlers, node.orelse, node.finalbody):
            self.inside(part, False)

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if a.name.split(".")[0] in POSIX_MODULES:
                self.report(node, f"import {a.name}")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if module.split(".")[0] in POSIX_MODULES:
            self.report(node, f"from {module} import ...")
        for a in node.names:
            if a.name in MISSING.get(module, ()):
                self.aliases[a.asname or a.name] = f"{module}.{a.name}"
                self.report(node, f"from {module} import {a.name}")

    def visit_Call(self, node: ast.Call) -> None:
        """os.open of a file without O_BINARY is text mode on Windows: read
        and write rewrite CRLF and stop at ^Z. Flags built inline must say
        BINARY (portable.BINARY), or open a folder."""
        if _dotted(node.func) == "os.open" and len(node.args) >= 2:
            flags = ast.unparse(node.args[1])
            if "O_" in flags and not any(w in flags for w in ("BINARY", "DIRECTORY", "DIR_FLAGS")):
                self.report(node, f"os.open without O_BINARY: {flags}")
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name) and node.attr in MISSING.get(node.value.id, ()):
            self.report(node, f"{node.value.id}.{node.attr}")
        self.generic_visit(node)


def unguarded(source: str, path: str = "<test>") -> list[str]:
    finder = Finder(path)
    finder.visit(ast.parse(source))
    return finder.found


def test_no_call_windows_lacks_is_reachable_there_unguarded():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += unguarded(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))
    assert found == [], "calls Windows lacks, with no guard (see reconcile/portable.py):\n" + "\n".join(found)


@pytest.mark.parametrize("source", [
    "import os\nos.fork()",
    "import os\nif sys.platform == 'win32':\n    os.fork()",
    "import os\nif sys.platform != 'win32':\n    pass\nelse:\n    os.pread(1, 2, 3)",
    "import fcntl",
    "from os import pread",
    "import os\nfd = os.open(p, os.O_WRONLY | os.O_CREAT)",
    "import os\ndef f():\n    if sys.platform == 'linux':\n        return\n    os.geteuid()",
    "import signal\nx = signal.SIGKILL if os.name == 'nt' else 9",
    "import os\nif something():\n    os.sendfile(1, 2, 0, 3)",
    "import os\nok = True or os.fork()",
    "import select\ntry:\n    select.poll()\nexcept OSError:\n    pass",
])
def test_the_walker_finds_unguarded_calls(source):
    assert unguarded(source)


@pytest.mark.parametrize("source", [
    "import os\nif sys.platform != 'win32':\n    os.fork()",
    "import os\nif sys.platform == 'win32':\n    pass\nelse:\n    import fcntl",
    "import os\nif hasattr(os, 'pread'):\n    os.pread(1, 2, 3)",
    "import os\ndef f():\n    if sys.platform == 'win32':\n        return\n    os.geteuid()",
    "import os\nx = os.O_DIRECTORY if FD_STAT else 0",
    "import os\nok = portable.FORK and os.sched_getaffinity(0)",
    "import os\n@posix_only\ndef f():\n    os.fork()",
    "import os\ndef f():\n    if not PREAD:\n        return b''\n    return os.pread(1, 2, 3)",
    "try:\n    import fcntl\nexcept ImportError:\n    fcntl = None",
    "import os\nx = getattr(os, 'O_NOFOLLOW', 0)",
    "import os\nfd = os.open(p, os.O_WRONLY | os.O_CREAT | portable.BINARY)",
])
def test_the_walker_accepts_guarded_calls(source):
    assert unguarded(source) == []
