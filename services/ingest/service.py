"""The ingest service: ``ingest.<dataset>`` topics -> Parquet in the object store.

One replica runs ``STREAMML_INGEST_PROCESSES`` member processes, each a
consumer-group member that lands its partitions exactly once (``member.py``).
Processes, not threads: decoding JSON, like ``consume()`` itself, holds the
GIL for much of each record, so one process is about one core. This process
checks the configuration, starts the members, serves health and the members'
summed metrics, and stops them all when told to or when one dies: the
replica then exits with an error and, restarted, every member replays from
its committed offsets.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from services.ingest.member import SERVE, load_specs, run_member
from services.ingest.settings import IngestSettings
from streamml.registry.datasets import publish_spec
from streamml.service import Service, StartupError, run
from streamml.store import StoreError

log = logging.getLogger("streamml.ingest")

START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 50  # below the chart's grace period: a landing in progress finishes


@dataclass
class Member:
    index: int
    process: BaseProcess
    channel: Connection


class IngestService(Service[IngestSettings]):
    name = "ingest"

    def load(self) -> None:
        # Checked here first, so a bad setting stops the replica with one message.
        store = self.connect_dependencies()
        for spec in load_specs(self.settings).values():
            # The rules the SDK checks its inputs with: it finds them by a dataset version's spec fingerprint.
            try:
                publish_spec(store, spec)
            except StoreError as error:
                raise StartupError(f"cannot store the spec of dataset {spec.name!r}: {error}") from None
        self.members = start_members(self.settings)

    def ready(self) -> bool:
        members = getattr(self, "members", [])
        return bool(members) and all(member.process.is_alive() for member in members)

    def serve(self) -> None:
        sentinels = [member.process.sentinel for member in self.members]
        while not self.stopping.is_set():
            ended = wait(sentinels, timeout=0.5)
            if ended and not self.stopping.is_set():
                dead = next(m for m in self.members if m.process.sentinel in ended)
                # The sentinel closes as the process exits, a moment before it can be reaped.
                dead.process.join()
                log.error(
                    "an ingest process exited; stopping the replica, which replays from the committed offsets "
                    "when restarted",
                    extra={"member": dead.index, "pid": dead.process.pid, "exit_code": dead.process.exitcode},
                )
                raise SystemExit(1)

    def close(self) -> None:
        self.stopping.set()
        stop_members(getattr(self, "members", []))

    def metrics(self) -> bytes:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)


def start_members(settings: IngestSettings) -> list[Member]:
    """Start the member processes, wait until each has loaded or said why it cannot, then let all serve.

    Members join the consumer group together, once all have loaded: the group
    forms in one rebalance, and no member starts consuming while another is
    still loading.
    """
    # spawn, not fork: a forked child would inherit librdkafka's and boto3's threads' locks.
    context = multiprocessing.get_context("spawn")
    count = settings.ingest.processes
    # A pipe between every two members, and a flag each: how an idle member decodes for a busy one (peers.py).
    links: list[dict[int, Connection]] = [{} for _ in range(count)]
    for first in range(count):
        for second in range(first + 1, count):
            links[first][second], links[second][first] = context.Pipe()
    idle = context.Array("b", count, lock=False)
    members = []
    for index in range(count):
        ours, theirs = context.Pipe()
        process = context.Process(target=run_member, args=(settings, index, os.getpid(), theirs, links[index], idle),
                                  name=f"ingest-{index}")
        process.start()
        theirs.close()
        members.append(Member(index, process, ours))
    for ends in links:
        for end in ends.values():
            end.close()  # each member holds its own ends; the replica keeps none
    for member in members:
        problem = _start_outcome(member)
        if problem:
            stop_members(members)
            raise StartupError(problem)
    for member in members:
        member.channel.send(SERVE)
    return members


def _start_outcome(member: Member) -> str | None:
    """None once the member has loaded, else why it has not."""
    if not member.channel.poll(START_TIMEOUT_S):
        return f"ingest process {member.index} did not start within {START_TIMEOUT_S} s"
    try:
        return member.channel.recv()
    except EOFError:
        member.process.join(5)
        return f"ingest process {member.index} exited during start with code {member.process.exitcode}; see its log"


def stop_members(members: list[Member]) -> None:
    """SIGTERM every member, then wait: each finishes the batch it is landing and leaves the group."""
    for member in members:
        if member.process.is_alive():
            member.process.terminate()
    for member in members:
        member.process.join(STOP_TIMEOUT_S)
        if member.process.is_alive():
            log.warning("an ingest process did not stop in time; killing it", extra={"member": member.index})
            member.process.kill()
            member.process.join()


def main() -> None:
    run(IngestService, IngestSettings)
