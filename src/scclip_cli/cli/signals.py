"""SIGTERM (a scheduler stopping the job) stops a command the way Ctrl-C does, with exit status 143."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from scclip_cli.errors import Terminated

_received = threading.Event()
"""Set when SIGTERM arrived in :func:`sigterm_as_interrupt`: Typer turns every
``KeyboardInterrupt`` into exit status 130, and the CLI makes it 143 from this."""


def sigterm_received() -> bool:
    """Whether SIGTERM stopped a command of this process (since :func:`forget_sigterm`)."""
    return _received.is_set()


def forget_sigterm() -> None:
    _received.clear()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`~scclip_cli.errors.Terminated`: a
    ``KeyboardInterrupt``, so the run shuts down as on Ctrl-C (the writer finishes the images
    already segmented, ``summary.json`` records the interrupted run) and the CLI exits 143
    (128 + SIGTERM) instead of Ctrl-C's 130."""

    def terminate(signum: int, frame: FrameType | None) -> None:
        _received.set()
        raise Terminated

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
