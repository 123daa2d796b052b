"""Worker processes, progress bars and file locks shared by the scan and the cache build.

Both decode every image of a folder in chunks over the cores, show a rich bar with the running
img/s, and must not race another process (DDP ranks on one node) doing the same work.
No torch import here: the scan path must start fast.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from hemacnn.atomic import new_dir_mode

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed, left in place) until the block
    ends: flock on POSIX, the Windows lock there, filelock's marker file where neither works."""
    from filelock import FileLock  # lazy: ~40 ms (importtime, under load); predict never locks

    # The mode open() gives a new file (umask applied), given explicitly: older filelock
    # releases made every new lock file 0644, which a colleague sharing $HEMACNN_CACHE under
    # umask 002 could then not open to lock.
    with FileLock(path, mode=new_dir_mode() & 0o666):
        yield


@contextlib.contextmanager
def progress_bar(label: str, total: int, enabled: bool = True
                 ) -> Iterator[Callable[[int], None]]:
    """A rich bar on stderr with the running img/s; yields advance(k), a no-op when disabled."""
    if not enabled:
        yield lambda k: None
        return
    # lazy: rich ~70 ms (importtime, measured under load); a one-image predict shows no bar
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    start = time.perf_counter()
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total, rate="")

        def advance(k: int) -> None:
            rate = (bar.tasks[0].completed + k) / max(time.perf_counter() - start, 1e-6)
            bar.update(task, advance=k, rate=f"{rate:,.0f} img/s")

        yield advance


def run_chunks(job: Callable[[T], R], tasks: Iterable[T], workers: int, *, label: str,
               total: int, progress: bool, count: Callable[[R], int]) -> Iterator[R]:
    """Yield ``job(task)`` for every task, in completion order, over ``workers`` processes.

    One worker runs the tasks in this process. The bar advances by ``count(result)`` images.
    ``job`` must be picklable (a module-level function or a partial of one).
    """
    tasks = list(tasks)
    n_proc = min(workers, len(tasks))
    with contextlib.ExitStack() as stack:
        done: Iterable[Any]
        if n_proc > 1:
            # Fork the workers first: no progress-bar thread may exist when a process forks.
            pool = stack.enter_context(multiprocessing.get_context().Pool(n_proc))
            done = pool.imap_unordered(job, tasks)
        else:
            done = map(job, tasks)
        advance = stack.enter_context(progress_bar(label, total, progress))
        for result in done:
            advance(count(result))
            yield result
