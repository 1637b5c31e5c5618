"""Progress of the long steps (training, export to mcu and lava, verify, profile), for whoever listens.

Library code wraps a long step in ``with step(label, total) as s: ... s.advance()``. Nothing is
shown unless a listener is set for the current context, so the library stays silent by default:
``with listen(fn):`` sends every :class:`Event` to ``fn``, and ``with to_stderr():`` draws bars on
stderr (what ``train.train(progress=True)`` and the CLI use; the CLI draws them only when stderr is
a terminal and not ``--quiet``, and with ``--verbose`` also logs each step's end and time). Steps
nest (an MCU verify's build inside the verify); stdout is never written, so a piped result stays clean.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    """One report of a step: ``state`` is start, advance or end; ``total`` None when unknown."""

    id: int
    label: str
    state: str
    done: int
    total: int | None
    info: str
    seconds: float  # since the step started
    depth: int  # 0 for a top-level step


Listener = Callable[[Event], None]
_listener: ContextVar[Listener | None] = ContextVar("edgesnn_progress_listener", default=None)
_depth: ContextVar[int] = ContextVar("edgesnn_progress_depth", default=0)
_ids = itertools.count()


class Step:
    """A running step; :meth:`advance` reports units done (batches, samples, phases)."""

    def __init__(self, label: str, total: int | None, listener: Listener | None, depth: int):
        self.label, self.total, self.listener, self.depth = label, total, listener, depth
        self.id, self.done, self.info, self.start = next(_ids), 0, "", time.perf_counter()

    def advance(self, n: int = 1, info: str | None = None) -> None:
        self.done += n
        if info is not None:
            self.info = info
        self._emit("advance")

    def _emit(self, state: str) -> None:
        if self.listener is not None:
            self.listener(Event(self.id, self.label, state, self.done, self.total, self.info,
                                time.perf_counter() - self.start, self.depth))


@contextlib.contextmanager
def step(label: str, total: int | None = None) -> Iterator[Step]:
    """A long step: reported to the current listener (none: nothing happens) at start and end.
    A step that raises reports no end: the listener's owner stops its display either way."""
    s = Step(label, total, _listener.get(), _depth.get())
    s._emit("start")
    token = _depth.set(s.depth + 1)
    try:
        yield s
    finally:
        _depth.reset(token)
    s._emit("end")


@contextlib.contextmanager
def listen(listener: Listener | None) -> Iterator[None]:
    """Send the steps run inside the block to ``listener`` (None: to nobody)."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


@contextlib.contextmanager
def reporting(progress: bool | Listener | None) -> Iterator[None]:
    """A library function's ``progress`` argument: None keeps the caller's listener (the CLI's, or
    none), False silences the block, a callable receives the events, True draws bars on stderr (a
    stderr that is no terminal gets a line as each step starts and ends instead)."""
    if progress is None:
        yield
    elif progress is True:
        with to_stderr(log=not sys.stderr.isatty()):
            yield
    else:
        with listen(progress or None):
            yield


class Bars:
    """A listener drawing one rich bar per running step on stderr (``draw``) and, with ``log``, one
    line per finished step with its time."""

    def __init__(self, draw: bool = True, log: bool = False):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                   TimeElapsedColumn)

        self.console = Console(stderr=True, highlight=False)
        self.draw, self.log, self.tasks = draw, log, {}
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=self.console,
                                 transient=True, redirect_stdout=False, redirect_stderr=False)

    def __call__(self, e: Event) -> None:
        if self.draw:
            if e.state == "start":
                self.progress.start()
                self.tasks[e.id] = self.progress.add_task("  " * e.depth + e.label, total=e.total, info=e.info)
            elif e.id in self.tasks and e.state == "advance":
                self.progress.update(self.tasks[e.id], completed=e.done, info=e.info)
            elif e.id in self.tasks:
                self.progress.remove_task(self.tasks.pop(e.id))
        if self.log and e.state != "advance":
            done = "" if e.state == "start" else f" done in {e.seconds:.1f} s" + (f" ({e.info})" if e.info else "")
            self.console.print(f"{'  ' * e.depth}{'start' if e.state == 'start' else 'end  '} {e.label}{done}",
                               markup=False, soft_wrap=True)

    def close(self) -> None:
        if self.progress.live.is_started:
            self.progress.stop()


@contextlib.contextmanager
def to_stderr(draw: bool | None = None, log: bool = False) -> Iterator[None]:
    """Bars on stderr for the steps inside the block (``draw`` None: only when stderr is a terminal);
    ``log``: also one line per step start and end."""
    draw = sys.stderr.isatty() if draw is None else draw
    if not draw and not log:
        yield
        return
    bars = Bars(draw, log)
    try:
        with listen(bars):
            yield
    finally:
        bars.close()
