"""SIGTERM stops a run the way Ctrl-C does: the session stops after its iteration and saves.

``kill``, ``systemctl stop``, ``docker stop``, Slurm and Kubernetes end a
process with SIGTERM, whose default action kills Python on the spot: every
iteration since the last autosave is lost and the headless exports are never
written. The console entry point turns SIGTERM into :class:`Terminated`, a
``KeyboardInterrupt`` raised in the main thread, so the ``finally`` blocks and
``except KeyboardInterrupt`` handlers that already make Ctrl-C an orderly stop
(``text4d.app.live.drive`` stops and checkpoints the session, ``text4d batch``
interrupts its jobs, a folder that a command made and never wrote to is
removed) serve SIGTERM too; the process then exits with 128 + 15.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

_received = threading.Event()


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered where Ctrl-C's ``KeyboardInterrupt`` would be."""


def interrupted_exit_code() -> int:
    """The shell's code for a process ended by a signal, 128 + its number: 143 once SIGTERM came, else 130 (Ctrl-C)."""
    return 128 + (signal.SIGTERM if _received.is_set() else signal.SIGINT)


def stop_on_sigterm() -> None:
    """Make SIGTERM raise :class:`Terminated` in the main thread (for console entry points, not library code).

    A second SIGTERM, while the first one's stop is saving, ends the process at
    once as before (checkpoints and exports are written atomically, so the
    previous ones stay intact).
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _received.set()
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)
