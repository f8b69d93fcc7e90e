"""Group commit for SQLite: one writer thread, a queue of write jobs, one commit per batch.

:class:`GroupWriter` owns the write connection of :class:`droneops.fleet.store.Store`. A write
job is a function ``fn(db) -> result`` run inside a transaction. The thread takes every job
queued (up to :data:`BATCH_MAX`), runs each in its own ``SAVEPOINT`` (a job that raises is
rolled back alone and gets its exception), commits the batch once, and only then resolves the
jobs' futures. With ``synchronous=FULL`` the commit is one fsync of the write-ahead log, so a
burst of N writes costs about one fsync per batch instead of N, and a future resolved means the
write is on disk: the service acknowledges an order only after its future resolved.

Jobs run in submission order (one queue, one thread), so the order of writes on disk is the
order of the decisions that made them, which crash recovery relies on. The caller's thread
never waits for the disk unless it chooses to (``future.result()`` or ``await
asyncio.wrap_future(future)``).

**Non-durable writes.** A job submitted with ``durable=False`` (records nobody was promised:
a ``command_rejected`` event, the outbox's "published" marks, pruning) costs no fsync of its
own. A batch holding at least one durable job commits with ``synchronous=FULL`` as always, and
its non-durable jobs ride along for free. A batch of only non-durable jobs commits with
``synchronous=NORMAL``: in WAL mode that commit is written to the log without an fsync (the log
is synced at the next durable commit or checkpoint), so it survives a process crash (kill -9)
but may be rolled back by a power cut. :attr:`GroupWriter.commits` counts the fsynced
(durable) commits, :attr:`GroupWriter.lazy_commits` the others, :attr:`GroupWriter.jobs` all
jobs.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("droneops.fleet.store")

#: Most write jobs in one transaction (one fsync).
BATCH_MAX = 64

#: SQLite ``synchronous`` level of a batch with a durable job (fsync at commit) and of a batch
#: of non-durable jobs only (WAL: no fsync at commit; survives a process crash, not a power cut).
DURABLE_SYNC = "FULL"
LAZY_SYNC = "NORMAL"

WriteJob = Callable[[sqlite3.Connection], Any]


class GroupWriter:
    """The writer thread. ``connect()`` opens its connection (called in the thread); ``lock``
    is held while a batch runs (the store shares it with its readers when both use one
    connection, e.g. ``:memory:``)."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], lock: threading.Lock | None = None,
                 name: str = "store-writer") -> None:
        self._connect = connect
        self._lock = lock or threading.Lock()
        self._queue: queue.SimpleQueue[tuple[WriteJob, cf.Future, bool] | None] = queue.SimpleQueue()
        self._ready: cf.Future = cf.Future()
        self._closed = False
        self._last: WriteJob | None = None
        #: Durable (fsynced) commits, non-durable commits (no fsync) and write jobs so far.
        self.commits = 0
        self.lazy_commits = 0
        self.jobs = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._ready.result()   # the connection opened (or its error is raised here)

    def submit(self, job: WriteJob, *, durable: bool = True) -> cf.Future:
        """Queue ``job``; its future resolves after the commit of its batch. ``durable=False``:
        the job needs no fsync of its own (see the module docstring)."""
        fut: cf.Future = cf.Future()
        if self._closed:
            fut.set_exception(RuntimeError("the store is closed"))
            return fut
        self._queue.put((job, fut, durable))
        return fut

    def close(self, last: WriteJob | None = None) -> None:
        """Run the queued jobs, then ``last(db)`` outside a transaction (e.g. a checkpoint),
        close the connection and stop the thread. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._last = last
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        try:
            db = self._connect()
        except BaseException as exc:
            self._ready.set_exception(exc)
            return
        self._ready.set_result(None)
        stop = False
        while not stop:
            item = self._queue.get()
            batch: list[tuple[WriteJob, cf.Future, bool]] = []
            while item is not None:
                batch.append(item)
                if len(batch) >= BATCH_MAX:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            else:
                stop = True
            if batch:
                self._commit(db, batch)
        try:
            if self._last is not None:
                with self._lock:
                    self._last(db)
        except sqlite3.Error:
            log.debug("store: final job failed", exc_info=True)
        finally:
            db.close()

    def _commit(self, db: sqlite3.Connection, batch: list[tuple[WriteJob, cf.Future, bool]]) -> None:
        results: list[tuple[bool, Any]] = []
        durable = any(d for _, _, d in batch)
        # From here on a caller can no longer cancel (a cancelled asyncio await cancels its
        # future): the jobs run either way; a future cancelled before is just not resolved.
        live = [fut.set_running_or_notify_cancel() for _, fut, _ in batch]
        with self._lock:
            try:
                if not durable:   # between transactions: this commit only, restored below
                    db.execute(f"PRAGMA synchronous={LAZY_SYNC}")
                db.execute("BEGIN IMMEDIATE")
                for job, _, _ in batch:
                    db.execute("SAVEPOINT job")
                    try:
                        results.append((True, job(db)))
                    except BaseException as exc:   # this job only: roll it back, keep the batch
                        db.execute("ROLLBACK TO job")
                        results.append((False, exc))
                    db.execute("RELEASE job")
                db.execute("COMMIT")
            except BaseException as exc:      # the commit itself failed: nothing of the batch is stored
                if db.in_transaction:
                    db.execute("ROLLBACK")
                log.exception("store: a batch of %d writes failed", len(batch))
                for (_, fut, _), alive in zip(batch, live):
                    if alive:
                        fut.set_exception(exc)
                return
            finally:
                if not durable:
                    db.execute(f"PRAGMA synchronous={DURABLE_SYNC}")
        if durable:
            self.commits += 1
        else:
            self.lazy_commits += 1
        self.jobs += len(batch)
        for (_, fut, _), alive, (ok, value) in zip(batch, live, results):
            if not alive:
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
