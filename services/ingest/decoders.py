"""The pool of processes that decode ingest records.

Decoding runs in processes, not threads: the polling thread holds the GIL
for most of the microsecond that ``consume()`` spends on each message, so
decoder threads in the same interpreter mostly wait for it.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor

import pyarrow as pa
from confluent_kafka import Message

from services.ingest.records import DecodedChunk


def start_decoders(processes: int) -> ProcessPoolExecutor:
    """A pool of ``processes`` decoders, all started and ready when this returns."""
    # spawn, not fork: the parent runs librdkafka and other threads by now.
    pool = ProcessPoolExecutor(
        processes, mp_context=multiprocessing.get_context("spawn"), initializer=_init_decoder,
        initargs=(os.getpid(),),
    )
    # A task per process, submitted together, starts each one now rather than
    # at the first batch (the pool spawns a process per submit while none is idle).
    for started in [pool.submit(time.sleep, 0.2) for _ in range(processes)]:
        started.result()
    return pool


def _init_decoder(parent: int) -> None:
    # Ctrl-C reaches the whole process group; the parent alone decides to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A SIGKILLed parent leaves its decoders waiting forever on the task queue
    # (they hold its write end too), so each one leaves when its parent does.
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


class DecodeTask:
    """A chunk of messages being decoded in the pool.

    The messages themselves stay here only until the result shows that none
    was rejected: a dead letter carries the original message, key and headers.
    """

    def __init__(self, messages: list[Message], future: Future[DecodedChunk]) -> None:
        self.messages: list[Message] | None = messages
        self.future = future
        future.add_done_callback(self._forget_messages_if_all_valid)

    def _forget_messages_if_all_valid(self, future: Future[DecodedChunk]) -> None:
        if not future.cancelled() and future.exception() is None and not future.result().rejected:
            self.messages = None

    def result(self) -> tuple[pa.Table, list[tuple[Message, str]]]:
        """The valid records and each rejected message with its reason."""
        decoded = self.future.result()
        return decoded.table, [(self.messages[i], reason) for i, reason in decoded.rejected]
