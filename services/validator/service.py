"""The validator service: ``model.trained`` -> a decision, the champion pointer, an announcement.

For each trained version (see ``promote.py`` for why each step is safe to
repeat, to crash in and to race):

1. a decision recorded already -> follow it (move the pointer if a crash came
   between the decision and the pointer), announce it again and stop;
2. evaluate the candidate on its dataset version's test split (metrics,
   slices, latency) and the champion on the same rows; decide, and decide
   again if the champion moved meanwhile. A version prep built for a drift
   has a test split of post-drift rows only, so a drift candidate is judged
   on the new world; the decision records which rows (``judged_on``);
3. a policy with ``shadow:`` puts a candidate that passed offline (and has a
   champion to be compared with) in shadow: ``models/<name>/shadow.json``,
   then ``model.shadow``; applications score live requests with it too, and
   the decision waits for that evidence (``finish_shadow``), resumed from the
   stored state after a restart;
4. record the decision, then follow it: on promote, compare-and-swap the
   champion pointer from the champion it was judged against;
5. send ``model.promoted`` or ``model.rejected``, with an id that is the same
   each time this decision (or pointer move) is announced.

A model's ``model.trained`` events share a partition (keyed by model), so one
replica judges a model's versions one after the other. Evaluation runs while
the consumer keeps polling, so a long one never costs the group membership.
A model without a policy, or a version whose files do not match its
manifest, is dead-lettered.
Policies are read again whenever a file of the folder changes; ``streamml
models judge NAME VERSION`` judges a version again through ``judge``, with
the current policy, replacing its decision.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import Counter, Histogram
from pydantic import Field

from services.validator.decide import decide
from services.validator.judge import evaluate_version
from services.validator.live import Joined, join_live, judge_live
from services.validator.policy import PolicyError, PolicyFolder, PromotionPolicy, ShadowPolicy
from services.validator.promote import (
    announcement,
    announcement_id,
    decision_record,
    follow_decision,
    record_decision,
    replace_decision,
)
from services.validator.shadow import Evidence, gather, topic_ends
from services.validator.testsplit import TestSplit, judged_rows, read_test_split
from streamml.events import Event, ModelPromoted, ModelShadow, ModelTrained, stable_id
from streamml.registry.datasets import read_manifest
from streamml.registry.decisions import DecisionRecord, Evaluation, read_decision
from streamml.registry.models import ChampionPointer, read_card, read_champion
from streamml.registry.shadow import ShadowState, end_shadow, read_shadow, start_shadow
from streamml.sdk.loader import LoadedVersion, load_version
from streamml.service import EventService, StartupError, run
from streamml.settings import Group, ServiceSettings
from streamml.store import ObjectStore

log = logging.getLogger("streamml.validator")

GROUP = "streamml-validator"
INPUT_TOPICS = ["model.trained"]
DEFAULT_LATENCY_BATCH = 256
# How long the consumer waits per poll while judging: also how late a finished judgement is noticed.
HEARTBEAT_S = 0.05

DECISIONS = Counter("streamml_validator_decisions_total", "Versions judged", ["model", "outcome"])
CONFLICTS = Counter(
    "streamml_validator_champion_conflicts_total", "Judgements made again because the champion moved meanwhile",
    ["model"],
)
JUDGE_SECONDS = Histogram(
    "streamml_validator_judge_seconds", "Loading, evaluating and deciding one version", ["model"],
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
)


class NoPolicy(Exception):
    """A trained model that no promotion policy covers."""


class ChampionRace(Exception):
    """The champion kept changing while a version was being judged."""


class ValidatorOptions(Group):
    policies_dir: Path = Field(Path("policies"), description="folder of promotion policy YAML files, one per model")
    latency_calls: int = Field(50, ge=1, le=10_000, description="timed predict calls per round of a latency measurement")
    latency_rounds: int = Field(
        5, ge=1, le=100, description="rounds of latency_calls; the round with the lowest p95 counts, so a busy host "
        "does not reject a fast model")
    max_attempts: int = Field(5, ge=1, le=100, description="judgements of one version when promotions keep racing")
    actor: str | None = Field(None, description="name in champion.json and events (default: validator@host:pid)")


class ValidatorSettings(ServiceSettings):
    validator: ValidatorOptions = ValidatorOptions()


class ValidatorService(EventService[ValidatorSettings]):
    name = "validator"
    group = GROUP
    accepts = (ModelTrained,)
    # One event per poll: judging takes seconds, and events fetched but not
    # yet handled would be rewound by work_while_polling and then redelivered.
    max_batch = 1

    def input_topics(self) -> list[str]:
        return [self.settings.kafka.topic(name) for name in INPUT_TOPICS]

    def load(self) -> None:
        options = self.settings.validator
        try:
            self.policy_folder = PolicyFolder(options.policies_dir)
        except PolicyError as error:
            raise StartupError(f"STREAMML_VALIDATOR_POLICIES_DIR={str(options.policies_dir)!r}: {error}") from None
        self.actor = options.actor or f"validator@{socket.gethostname()}:{os.getpid()}"
        super().load()
        log.info("policies loaded", extra={"models": sorted(self.policy_folder.policies)})

    @classmethod
    def for_judging(cls, settings: ValidatorSettings, store: ObjectStore, actor: str) -> ValidatorService:
        """A validator that only judges (``judge``), for ``streamml models judge``: no consumer, no producer."""
        validator = cls(settings)
        validator.store, validator.actor = store, actor
        return validator

    def handle_event(self, event: Event, context: dict) -> None:
        assert isinstance(event, ModelTrained)
        context = {**context, "model": event.model, "version": event.version}
        policies = self.policy_folder.current()
        policy = policies.get(event.model)
        if policy is None:
            covered = ", ".join(sorted(policies)) or "none"
            raise NoPolicy(
                f"no promotion policy for model {event.model!r} in STREAMML_VALIDATOR_POLICIES_DIR="
                f"{str(self.settings.validator.policies_dir)!r} (it has: {covered}); "
                f"add a file with model: {event.model} (it is read at once), then "
                f"`streamml models judge {event.model} {event.version}`"
            )
        recorded = read_decision(self.store, event.model, event.version)
        shadow = read_shadow(self.store, event.model) if recorded is None else None
        if shadow is not None and shadow.version == event.version:
            log.info("resuming the shadow phase", extra={**context, "started": shadow.started.isoformat(),
                                                           "deadline": shadow.deadline.isoformat()})
            mine, standing, pointer = self.consumer.work_while_polling(
                lambda: self.finish_shadow(shadow, context), heartbeat_s=HEARTBEAT_S)
            DECISIONS.labels(event.model, "promoted" if mine.promote else "rejected").inc()
        elif recorded is not None:
            standing = recorded
            end_shadow(self.store, event.model, event.version)  # a crash may have come before the shadow ended
            pointer = follow_decision(self.store, recorded, actor=self.actor, time=datetime.now(UTC))
            log.info("decided before; announcing again", extra=context)
        else:
            started = time.monotonic()
            log.info("judging", extra={**context, "dataset": event.dataset, "dataset_version": event.dataset_version})
            mine, standing, pointer = self.consumer.work_while_polling(
                lambda: self.judge(event, policy, context), heartbeat_s=HEARTBEAT_S
            )
            JUDGE_SECONDS.labels(event.model).observe(time.monotonic() - started)
            if standing is mine:
                DECISIONS.labels(event.model, "promoted" if mine.promote else "rejected").inc()
            else:
                log.info("another validator decided this version first; following its decision", extra=context)
        event_out = announcement(standing, pointer)
        if event_out is None:
            log.info("promotion superseded: the champion moved on since the decision", extra={
                **context, "champion": pointer.version if pointer else None})
            return
        self.producer.send(event_out, event_id=announcement_id(event_out, pointer))
        log.info("promoted" if isinstance(event_out, ModelPromoted) else "rejected",
                 extra={**context, "champion": standing.champion_version, "summary": standing.summary})

    def judge(
        self, event: ModelTrained, policy: PromotionPolicy, context: dict,
        replacing: tuple[DecisionRecord, str] | None = None,
    ) -> tuple[DecisionRecord, DecisionRecord, ChampionPointer | None]:
        """This instance's decision, the decision that stands (the first recorded), and the pointer
        after following it. ``replacing``: the version's earlier decision and its ETag, which this one
        replaces (a judgement asked for again)."""
        manifest = read_manifest(self.store, event.dataset, event.dataset_version)
        split = read_test_split(self.store, manifest)
        judged = judged_rows(manifest, len(split))
        if judged.after_drift:
            log.info("judging on post-drift rows", extra={**context, "rows": judged.rows, "judged_on": judged.text})
        candidate = load_version(self.store, event.model, event.version)
        slices = [rule.feature for rule in policy.slices]
        batch = policy.latency.batch_size if policy.latency else DEFAULT_LATENCY_BATCH
        candidate_eval = evaluate_version(
            candidate, split, slices=slices, latency_batch=batch, latency_calls=self.settings.validator.latency_calls,
            latency_rounds=self.settings.validator.latency_rounds,
        )
        champions: dict[str, Evaluation] = {}
        current, _ = read_champion(self.store, event.model)
        for _ in range(self.settings.validator.max_attempts):
            against = current.version if current else None
            if current is not None and against == event.version:
                # Made champion by a person (or by a validator of a release before decisions came first).
                against = current.previous
            if against is not None and against not in champions:
                champions[against] = self._evaluate_champion(event.model, against, split, slices)
            champion_eval = champions.get(against) if against else None
            decision = decide(candidate_eval, champion_eval, policy, judged)
            latest, _ = read_champion(self.store, event.model)
            if (latest.version if latest else None) != (current.version if current else None):
                CONFLICTS.labels(event.model).inc()
                log.info("champion changed while judging; judging again",
                         extra={**context, "was": against, "now": latest.version if latest else None})
                current = latest
                continue
            now = datetime.now(UTC)
            mine = decision_record(
                decision, model=event.model, version=event.version, candidate=candidate_eval,
                champion_version=against, champion=champion_eval, policy=policy, actor=self.actor, time=now,
                judged_on=judged,
            )
            if replacing is None and policy.shadow is not None and mine.promote and against is not None:
                return self.start_shadow(mine, policy.shadow, context)
            if replacing is None:
                standing = record_decision(self.store, mine)
            else:
                mine = mine.replacing(replacing[0])
                standing = replace_decision(self.store, mine, replacing[1])
            return mine, standing, follow_decision(self.store, standing, actor=self.actor, time=now)
        raise ChampionRace(
            f"the champion of {event.model!r} changed {self.settings.validator.max_attempts} times while "
            f"{event.version} was judged; send its model.trained again once promotions settle"
        )

    def start_shadow(
        self, offline: DecisionRecord, shadow: ShadowPolicy, context: dict,
    ) -> tuple[DecisionRecord, DecisionRecord, ChampionPointer | None]:
        """The candidate passed offline: put it in shadow (the state first, then ``model.shadow``), then
        judge it on live evidence. A second validator that starts the same shadow follows the first's."""
        now = datetime.now(UTC)
        state = start_shadow(self.store, ShadowState(
            model=offline.model, version=offline.version, champion_version=offline.champion_version, started=now,
            deadline=now + timedelta(seconds=shadow.max_duration_s),
            offsets=topic_ends(self.settings.kafka, offline.model), offline=offline, actor=self.actor,
        ))
        self.producer.send_now(
            ModelShadow(model=state.model, version=state.version, champion=state.champion_version,
                        metrics={name: value for name, value in offline.candidate.metrics.items() if value is not None},
                        min_predictions=shadow.min_predictions, deadline=state.deadline),
            event_id=stable_id("model.shadow", state.model, state.version, state.started.isoformat()),
        )
        log.info("in shadow", extra={**context, "champion": state.champion_version,
                                     "deadline": state.deadline.isoformat()})
        return self.finish_shadow(state, context)

    def finish_shadow(
        self, state: ShadowState, context: dict,
    ) -> tuple[DecisionRecord, DecisionRecord, ChampionPointer | None]:
        """Gather the live evidence, judge it with the shadow rules of the policy that started the shadow,
        record the decision, follow it and end the shadow."""
        policy = PromotionPolicy.model_validate(state.offline.policy).shadow
        card = read_card(self.store, state.model, state.version)
        task, classes = card["task"], (card.get("outputs") or {}).get("classes")

        def joined(evidence: Evidence) -> Joined:
            return join_live(*evidence.answers())

        evidence, timed_out = gather(self.settings.kafka, state,
                                     lambda found: joined(found).rows >= policy.min_predictions, self.stopping)
        now = datetime.now(UTC)
        live, seen = judge_live(task, classes, joined(evidence), policy, started=state.started, ended=now,
                                timed_out=timed_out)
        offline = state.offline
        mine = offline.model_copy(update={
            "promote": live.promote, "reasons": live.reasons, "notes": [*offline.notes, *live.notes],
            "shadow": seen, "actor": self.actor, "time": now,
        })
        log.info("shadow judged", extra={**context, "rows": seen.rows, "promote": live.promote,
                                         "timed_out": timed_out})
        standing = record_decision(self.store, mine)
        pointer = follow_decision(self.store, standing, actor=self.actor, time=now)
        end_shadow(self.store, state.model, state.version)
        return mine, standing, pointer

    def _evaluate_champion(self, model: str, version: str, split: TestSplit, slices: list[str]) -> Evaluation:
        champion: LoadedVersion = load_version(self.store, model, version, warm_up=False)
        return evaluate_version(champion, split, slices=slices)


def main() -> None:
    run(ValidatorService, ValidatorSettings)
