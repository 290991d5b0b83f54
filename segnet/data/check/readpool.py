"""Reading files with every core: one function applied to every item (a split's samples) by a
pool of worker processes, the results handed back in the items' order, so that what is built
from them is exactly what one process builds. Small jobs stay in this process."""
import math
import multiprocessing
import os
import signal

import torch

from segnet.runtime import usable_cores

POOL_FROM = 256  # with workers=None, fewer items are read here: a pool takes ~0.3 s to start
CHUNKS_PER_WORKER = 8  # chunks a worker takes on average: the work stays balanced at the end
MAX_CHUNK = 64  # items a chunk at most: progress moves, results come back in small batches

_read = None  # in a worker process: the function its pool applies (set by _start_worker)


def read_workers(workers=None, items=None):
    """The processes to read with: workers as given (1: this process alone), else the cores
    this process may use shared among the local processes (torchrun's LOCAL_WORLD_SIZE), and
    1 for fewer than POOL_FROM items."""
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1 (or None: every core), got "
                             f"{workers!r}")
        return workers
    if items is not None and items < POOL_FROM:
        return 1
    processes = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
    return max(1, usable_cores() // processes)


def _start_worker(read):
    """A worker's set-up: the function it applies, one torch thread (the pool fills the cores
    already; more threads would only wait on each other), and the default signals: the pool
    ends its workers with SIGTERM, which a handler inherited from the parent (training's stop
    flag) would catch and wait on for ever, and Ctrl-C is the parent's to handle."""
    global _read
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    _read = read


def _read_chunk(chunk):
    return [_read(item) for item in chunk]


def _chunks(items, workers):
    """items cut into about CHUNKS_PER_WORKER chunks a worker, at most MAX_CHUNK items each."""
    size = max(1, min(MAX_CHUNK, math.ceil(len(items) / (workers * CHUNKS_PER_WORKER))))
    return [items[start:start + size] for start in range(0, len(items), size)]


def read_in_order(read, items, workers=None):
    """Yield read(item) for every item, in the items' order, from `workers` processes
    (read_workers). For a pool, read must pickle (a top-level function, or a functools.partial
    of one): each worker receives it once. An exception other than what read returns stops the
    pool and is raised here."""
    items = list(items)
    workers = min(read_workers(workers, len(items)), max(len(items), 1))
    if workers == 1:
        yield from map(read, items)
        return
    with multiprocessing.get_context().Pool(workers, _start_worker, (read,)) as pool:
        for results in pool.imap(_read_chunk, _chunks(items, workers)):
            yield from results
        pool.close()  # done: the workers end on their own (an error terminates them instead)
        pool.join()
