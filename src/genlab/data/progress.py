"""Progress for long builds of a built-in dataset (synthesising clips, parsing scores): a rich bar on a terminal,
otherwise a log line every ~10%, so that a build whose output goes to a file still says how far it is."""

from __future__ import annotations

import logging
import math
import sys
from contextlib import contextmanager

log = logging.getLogger("genlab.data")


@contextmanager
def counted(total: int, what: str, done_as: str):
    """Yields `advance()`, called once per item; the log line reads "<what>: <done>/<total> <done_as>"."""
    if sys.stderr.isatty():
        from rich.console import Console  # imported lazily: only a terminal shows the bar
        from rich.progress import Progress

        with Progress(console=Console(stderr=True)) as bar:
            task = bar.add_task(what, total=total)
            yield lambda: bar.advance(task)
        return
    every, done = math.ceil(total / 10), 0

    def advance():
        nonlocal done
        done += 1
        if done % every == 0 or done == total:
            log.info("%s: %d/%d %s", what, done, total, done_as)

    yield advance
