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

WriteJob = Callable[[sqlite3.Connection], Any]


class GroupWriter:
    """The writer thread. ``connect()`` opens its connection (called in the thread); ``lock``
    is held while a batch runs (the store shares it with its readers when both use one
    connection, e.g. ``:memory:``)."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], lock: threading.Lock | None = None,
                 name: str = "store-writer") -> None:
        self._connect = connect
        self._lock = lock or threading.Lock()
        self._queue: queue.SimpleQueue[tuple[WriteJob, cf.Future] | None] = queue.SimpleQueue()
        self._ready: cf.Future = cf.Future()
        self._closed = False
        self._last: WriteJob | None = None
        #: Committed transactions (fsyncs) and write jobs so far.
        self.commits = 0
        self.jobs = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._ready.result()   # the connection opened (or its error is raised here)

    def submit(self, job: WriteJob) -> cf.Future:
        """Queue ``job``; its future resolves after the commit of its batch."""
        fut: cf.Future = cf.Future()
        if self._closed:
            fut.set_exception(RuntimeError("the store is closed"))
            return fut
        self._queue.put((job, fut))
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
            batch: list[tuple[WriteJob, cf.Future]] = []
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

    def _commit(self, db: sqlite3.Connection, batch: list[tuple[WriteJob, cf.Future]]) -> None:
        results: list[tuple[bool, Any]] = []
        with self._lock:
            try:
                db.execute("BEGIN IMMEDIATE")
                for job, _ in batch:
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
                for _, fut in batch:
                    fut.set_exception(exc)
                return
        self.commits += 1
        self.jobs += len(batch)
        for (_, fut), (ok, value) in zip(batch, results):
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
