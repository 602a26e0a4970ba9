"""Runs as nobody need a private state folder of their own: reconcile refuses
a shared or foreign one (issue 24.5). These hand it over and back."""

from __future__ import annotations

import os


def _chown_tree(state, uid: int) -> None:
    for dirpath, _, files in os.walk(state):
        os.chown(dirpath, uid, uid)
        os.chmod(dirpath, 0o700)
        for n in files:
            os.chown(os.path.join(dirpath, n), uid, uid)


def give_state_to_nobody(state) -> None:
    _chown_tree(state, 65534)


def take_state_back(state) -> None:
    _chown_tree(state, 0)
