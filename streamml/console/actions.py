"""Promote and rollback from the console: the CLI's compare-and-swap, with a reason and the console token.

Without ``STREAMML_CONSOLE_TOKEN`` both are refused and the pages show no
working form: the console is read-only. With it, a request must carry the
token (a form field; it is never rendered back), a reason, and the champion
the person saw, so a pointer that moved since the page was loaded is not
overwritten. The change goes through ``streamml.registry.champion``, exactly
as ``streamml models promote|rollback`` does, and is announced with
``model.promoted``.
"""

from __future__ import annotations

import hmac
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qs

from pydantic import SecretStr

from streamml.events import ModelPromoted
from streamml.kafka import DeliveryError, EventProducer
from streamml.registry.champion import ChampionChanged, ManualPromotionRefused, promote_by_hand, roll_back
from streamml.registry.keys import RegistryError
from streamml.registry.models import read_champion
from streamml.settings import KafkaSettings
from streamml.store import ObjectStore

log = logging.getLogger("streamml.console")
MAX_FORM_BYTES = 16 * 1024
READ_ONLY = "the console is read-only: set STREAMML_CONSOLE_TOKEN where it runs to enable promote and rollback"


class ActionRefused(Exception):
    """Nothing was changed; ``status`` is the HTTP status and the text says why and what to do."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ChampionForm:
    """A submitted promote or rollback form."""

    token: str
    reason: str
    actor: str
    expected: str | None  # the champion the page showed
    version: str | None = None  # promote only
    force: bool = False

    @classmethod
    def parse(cls, body: bytes) -> ChampionForm:
        fields = {name: values[0].strip() for name, values in parse_qs(body.decode("utf-8", "replace")).items()}
        return cls(token=fields.get("token", ""), reason=fields.get("reason", ""),
                   actor=fields.get("actor", "") or "someone", expected=fields.get("expected") or None,
                   version=fields.get("version") or None, force=fields.get("force") == "on")


class ChampionActions:
    """Moves champion pointers for people who hold the token; announces each move."""

    def __init__(self, store: ObjectStore, kafka: KafkaSettings, token: SecretStr | None,
                 producer: EventProducer | None = None) -> None:
        self.store = store
        self.kafka = kafka
        self._token = token
        self._producer = producer  # made on the first change
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def promote(self, model: str, form: ChampionForm) -> ModelPromoted:
        self._check(model, form)
        if not form.version:
            raise ActionRefused(400, "choose the version to promote")
        try:
            event = promote_by_hand(self.store, model, form.version, force=form.force, actor=_actor(form),
                                    reason=form.reason, time=datetime.now(UTC))
        except ManualPromotionRefused as refused:
            raise ActionRefused(409, f"version {form.version!r} {refused.verdict}; tick “force” to promote it "
                                     "anyway") from None
        except (ChampionChanged, RegistryError) as error:
            raise ActionRefused(409, f"{error}; nothing was changed") from None
        return self._announce(event)

    def rollback(self, model: str, form: ChampionForm) -> ModelPromoted:
        self._check(model, form)
        try:
            event = roll_back(self.store, model, actor=_actor(form), reason=form.reason, time=datetime.now(UTC))
        except (ChampionChanged, RegistryError) as error:
            raise ActionRefused(409, f"{error}; nothing was changed") from None
        return self._announce(event)

    def _check(self, model: str, form: ChampionForm) -> None:
        if self._token is None:
            raise ActionRefused(403, READ_ONLY)
        if not hmac.compare_digest(form.token.encode(), self._token.get_secret_value().encode()):
            raise ActionRefused(403, "wrong console token; nothing was changed")
        if not form.reason:
            raise ActionRefused(400, "give a reason: it is recorded in champion.json and announced with the change")
        current, _ = read_champion(self.store, model)
        found = current.version if current else None
        if found != form.expected:
            raise ActionRefused(409, f"the champion of {model!r} is {found or 'unset'} now, not "
                                     f"{form.expected or 'unset'} as the page showed; nothing was changed, "
                                     "look again and retry")

    def _announce(self, event: ModelPromoted) -> ModelPromoted:
        with self._lock:
            if self._producer is None:
                self._producer = EventProducer(self.kafka, client_id="streamml-console")
            try:
                self._producer.send_now(event, timeout=self.kafka.connect_timeout_s * 3)
            except DeliveryError as error:
                log.error("model.promoted not sent", extra={"model": event.model, "version": event.version})
                raise ActionRefused(502, f"the champion of {event.model!r} is now {event.version}, but "
                                         f"model.promoted was not sent ({error}); applications pick the change up "
                                         "when they next read the pointer, or promote the same version again "
                                         "to announce it") from None
        log.info("champion moved", extra={"model": event.model, "version": event.version, "actor": event.actor})
        return event


def _actor(form: ChampionForm) -> str:
    return f"{form.actor} (console)"
