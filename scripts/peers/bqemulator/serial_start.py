"""Starts bqemulator (same arguments as its `bqemulator` command) with every DuckDB access on one thread.

bqemulator 1.4.0 shares one DuckDB connection between its asyncio event loop (REST), AnyIO worker threads
(synchronous REST routes) and gRPC worker threads (the Storage Write API). A DuckDB connection is not safe to
use from several threads: a Storage Write append that registers its Arrow rows while a REST query runs on
the loop deadlocks the whole process (the query holds the connection and waits for the GIL, the append
holds the GIL and waits for the connection). Seen in CI: the emulator stopped answering on both ports.

This launcher changes no behaviour of the emulator, only the thread its work runs on:
- the Storage Write (and Storage Read session) handlers' DuckDB work is handed to the event loop and the
  gRPC thread waits for its result;
- synchronous REST routes run on the event loop instead of AnyIO's thread pool (none of them waits on
  anything, so the loop stays live).
Streaming reads (ReadRows) still run on gRPC threads; the archiver does not use the Storage Read API.

It also gives gRPC's synchronous handlers more threads. They run on the event loop's default executor
(min(32, cores + 4) threads: 6 here), and an open AppendRows stream holds its thread for as long as the
client keeps it open, so a seventh writer's calls queued forever: two daemons of the lease test with four
mappings were enough. Real BigQuery takes thousands of concurrent connections per project.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import fastapi.concurrency
import fastapi.routing
import bqemulator.server
from bqemulator.cli import main
from bqemulator.grpc_api.read_servicer import BigQueryReadHandler
from bqemulator.grpc_api.write_servicer import BigQueryWriteHandler

T = TypeVar("T")

#: Threads for gRPC's synchronous handlers: one per open AppendRows stream, plus the short calls.
GRPC_THREADS = 256

_loop: asyncio.AbstractEventLoop | None = None
_loop_thread: int | None = None


def on_loop(fn: Callable[..., T]) -> Callable[..., T]:
    """Runs `fn` on the emulator's event loop and waits for it, unless called there already."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        loop = _loop
        if loop is None or threading.get_ident() == _loop_thread:
            return fn(*args, **kwargs)
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not done.set_running_or_notify_cancel():
                return
            try:
                done.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed back to the gRPC thread as it is
                done.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return done.result()

    return wrapper


_build_grpc_server = bqemulator.server.build_grpc_server


def build_grpc_server(*args: Any, **kwargs: Any) -> Any:
    """Remembers the event loop the servers run on (this is called from within it)."""
    global _loop, _loop_thread
    _loop = asyncio.get_running_loop()
    _loop_thread = threading.get_ident()
    _loop.set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=GRPC_THREADS, thread_name_prefix="grpc-sync")
    )
    return _build_grpc_server(*args, **kwargs)


async def run_inline(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Replaces starlette's run_in_threadpool: a synchronous route runs on the event loop."""
    return func(*args, **kwargs)


bqemulator.server.build_grpc_server = build_grpc_server
fastapi.routing.run_in_threadpool = run_inline
fastapi.concurrency.run_in_threadpool = run_inline

for handler, names in (
    (
        BigQueryWriteHandler,
        (
            "_handle_create_write_stream",
            "_handle_get_write_stream",
            "_handle_finalize_write_stream",
            "_handle_batch_commit_write_streams",
            "_handle_flush_rows",
            "_bind_stream_to_target",
            "_perform_append",
        ),
    ),
    (BigQueryReadHandler, ("_handle_create_read_session", "_handle_split_read_stream")),
):
    for name in names:
        setattr(handler, name, on_loop(getattr(handler, name)))

if __name__ == "__main__":
    sys.argv[0] = "bqemulator"
    sys.exit(main())
