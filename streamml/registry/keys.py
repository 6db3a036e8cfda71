"""Every object key streamml reads or writes, built and parsed in one place.

    raw/<dataset>/date=<day>/<topic>/p<partition>/<first offset>-<last offset>.parquet
    datasets/<dataset>/v<N>/_claim.json             the build attempt that holds version N, and its lease
    datasets/<dataset>/v<N>/attempts/<attempt>/<split>/part-*.parquet
                                                    prepared rows of a split, as one attempt wrote them
    datasets/<dataset>/v<N>/manifest.json           created last: the version exists once this does, and
                                                    its files are the ones it names
    datasets/<dataset>/_drift_request               a drift build waiting for rows from after the drift
    rebuilds/<dataset>/v<N>/<attempt>/              a rebuild of version N from its lineage (scratch):
        <split>/part-*.parquet, manifest.json       the rebuilt splits and manifest, to compare with v<N>
        raw/...                                     the records of a raw object that changed since v<N>
                                                    was built, landed again from their offsets
    specs/<dataset>/<fingerprint>.json              a dataset spec ingest enforces, by the fingerprint its
                                                    manifests record: the rules the SDK checks inputs with
    models/<model>/<version>/attempts/<attempt>/    the files one training attempt wrote:
        card.json                                   what the model is
        <portable program>                          named by the card (model.pt2, model.torchscript.pt)
        state_dict.pt                               weights
    models/<model>/<version>/checkpoints/last.pt    the trainer's last epoch, to resume from
    models/<model>/<version>/manifest.json          created last: names the attempt whose files are
                                                    the version, with their sha256
    models/<model>/<version>/decision.json          the validator's verdict on the version
    models/<model>/champion.json                    which version applications serve
    monitor/<model>/latest.json                     the monitor's reports, events and drift episodes
    monitor/<model>/checkpoint.npz                  all the monitor holds of the model, and the offsets it covers
    monitor/<model>/versions/<version>.json         the same, as it last was while <version> was champion
    monitor/<model>/unwatched.json                  why the monitor cannot watch the champion, while it cannot

Raw keys encode their offset range, so a replayed batch lands on the same key.
Model names and versions become parts of keys, so they are checked here: a
version must not contain ``/`` or ``..``.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from streamml.specs import NAME

# A version becomes part of object keys, so it must not contain "/" or "..".
VERSION = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
OFFSET_DIGITS = 20

RAW_ROOT = "raw/"
DATASETS_ROOT = "datasets/"
MODELS_ROOT = "models/"
MONITOR_ROOT = "monitor/"
SPECS_ROOT = "specs/"
REBUILDS_ROOT = "rebuilds/"

MANIFEST_FILE = "manifest.json"
ATTEMPTS_DIR = "attempts"
CLAIM_FILE = "_claim.json"
DRIFT_REQUEST_FILE = "_drift_request"
ANNOUNCED_FILE = "_announced"  # the newest version whose dataset.ready prep has sent
CARD_FILE = "card.json"
STATE_DICT_FILE = "state_dict.pt"
CHECKPOINT_FILE = "checkpoints/last.pt"
DECISION_FILE = "decision.json"
CHAMPION_FILE = "champion.json"
SHADOW_FILE = "shadow.json"
MONITOR_STATE_FILE = "latest.json"
MONITOR_CHECKPOINT_FILE = "checkpoint.npz"
MONITOR_UNWATCHED_FILE = "unwatched.json"

_RAW_RANGE = re.compile(r"/(?P<topic>[^/]+)/p(?P<partition>\d+)/(?P<first>\d+)-(?P<last>\d+)\.parquet$")
_DATASET_VERSION = re.compile(r"/v(\d+)/$")


class RegistryError(ValueError):
    """A name, version or stored object that is not what the layout says."""


def check_name(name: str) -> str:
    if not re.fullmatch(NAME, name):
        raise RegistryError(f"model name {name!r} must match {NAME} (lower case, digits, underscores)")
    return name


def check_version(version: str) -> str:
    if not re.fullmatch(VERSION, version):
        raise RegistryError(f"model version {version!r} must match {VERSION} (no slashes, at most 128 characters)")
    return version


def last_part(prefix: str) -> str:
    """``models/fraud/`` -> ``fraud``: the name of a "folder" that ``list_prefixes`` returned."""
    return prefix.rstrip("/").rsplit("/", 1)[-1]


# -- raw objects (ingest writes, prep reads) ------------------------------------------


@dataclass(frozen=True)
class RawObject:
    """A landed batch, as its key describes it."""

    key: str
    topic: str
    partition: int
    first_offset: int
    last_offset: int

    @property
    def records(self) -> int:
        """Records of the offset range: an upper bound of the rows (dead letters included)."""
        return self.last_offset - self.first_offset + 1


def raw_prefix(dataset: str) -> str:
    return f"{RAW_ROOT}{dataset}/"


def raw_partition_prefix(dataset: str, topic: str, partition: int, first_time_ms: int) -> str:
    """Where the batches of one partition land, per day of their first record's Kafka time."""
    day = datetime.fromtimestamp(first_time_ms / 1000, UTC).strftime("%Y-%m-%d")
    return f"{raw_prefix(dataset)}date={day}/{topic}/p{partition:05d}/"


def raw_range_start(partition_prefix: str, first_offset: int) -> str:
    """The prefix every batch starting at ``first_offset`` has, whatever its last offset."""
    return f"{partition_prefix}{first_offset:0{OFFSET_DIGITS}d}-"


def raw_object_key(partition_prefix: str, first_offset: int, last_offset: int) -> str:
    return f"{raw_range_start(partition_prefix, first_offset)}{last_offset:0{OFFSET_DIGITS}d}.parquet"


def raw_dataset(key: str) -> str | None:
    """``raw/tx/date=.../....parquet`` -> ``tx``; None for a key outside ``raw/``."""
    if not key.startswith(RAW_ROOT) or "/" not in key[len(RAW_ROOT):]:
        return None
    return key[len(RAW_ROOT):].split("/", 1)[0]


def parse_raw_key(key: str) -> RawObject | None:
    """The batch a raw key names; None for a key that is not a landed batch."""
    match = _RAW_RANGE.search(key)
    if match is None:
        return None
    return RawObject(key, match["topic"], int(match["partition"]), int(match["first"]), int(match["last"]))


# -- dataset versions (prep writes; trainer, validator, SDK and monitor read) ---------


def dataset_root(dataset: str) -> str:
    return f"{DATASETS_ROOT}{dataset}/"


def dataset_prefix(dataset: str, version: int) -> str:
    return f"{dataset_root(dataset)}v{version}/"


def dataset_manifest_key(dataset: str, version: int) -> str:
    return dataset_prefix(dataset, version) + MANIFEST_FILE


def dataset_spec_key(dataset: str, fingerprint: str) -> str:
    if not re.fullmatch(VERSION, fingerprint):
        raise RegistryError(f"spec fingerprint {fingerprint!r} cannot be part of a key; it must match {VERSION}")
    return f"{SPECS_ROOT}{dataset}/{fingerprint}.json"


def split_prefix(dataset: str, version: int, split: str) -> str:
    return f"{dataset_prefix(dataset, version)}{split}/"


def new_attempt() -> str:
    """A name for one attempt at writing a version: when it started (UTC), then random digits."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def dataset_attempt_prefix(dataset: str, version: int, attempt: str) -> str:
    """Where one build attempt writes its splits; only the manifest that names them publishes them."""
    return f"{dataset_prefix(dataset, version)}{ATTEMPTS_DIR}/{check_version(attempt)}/"


def rebuild_prefix(dataset: str, version: int, attempt: str) -> str:
    """Where one rebuild of a version writes (``datasets rebuild``); nothing else reads it."""
    return f"{REBUILDS_ROOT}{dataset}/v{version}/{check_version(attempt)}/"


def rebuild_raw_key(prefix: str, raw_key: str) -> str:
    """Where a rebuild lands again the records of ``raw_key`` when the stored object is not the one recorded."""
    return prefix + raw_key


def claim_key(dataset: str, version: int) -> str:
    return dataset_prefix(dataset, version) + CLAIM_FILE


def drift_request_key(dataset: str) -> str:
    return dataset_root(dataset) + DRIFT_REQUEST_FILE


def dataset_announced_key(dataset: str) -> str:
    return dataset_root(dataset) + ANNOUNCED_FILE


def parse_dataset_version(prefix: str) -> int | None:
    """``datasets/tx/v3/`` -> 3; None for another "folder" under the dataset."""
    match = _DATASET_VERSION.search(prefix)
    return int(match[1]) if match else None


# -- model versions (trainer and validator write; SDK, monitor and CLI read) ----------


def model_root(name: str) -> str:
    return f"{MODELS_ROOT}{check_name(name)}/"


def version_prefix(name: str, version: str) -> str:
    return f"{model_root(name)}{check_version(version)}/"


def version_key(name: str, version: str, filename: str) -> str:
    return version_prefix(name, version) + filename


def attempt_prefix(name: str, version: str, attempt: str) -> str:
    """Where one training attempt writes the files of a version; the manifest names the attempt that won."""
    return version_key(name, version, f"{ATTEMPTS_DIR}/{check_version(attempt)}/")


def model_manifest_key(name: str, version: str) -> str:
    return version_key(name, version, MANIFEST_FILE)


def decision_key(name: str, version: str) -> str:
    return version_key(name, version, DECISION_FILE)


def checkpoint_key(name: str, version: str) -> str:
    return version_key(name, version, CHECKPOINT_FILE)


def champion_key(name: str) -> str:
    return model_root(name) + CHAMPION_FILE


def shadow_key(name: str) -> str:
    return model_root(name) + SHADOW_FILE


# -- monitor (the monitor writes; the CLI reads) --------------------------------------


def monitor_state_key(model: str) -> str:
    return f"{MONITOR_ROOT}{check_name(model)}/{MONITOR_STATE_FILE}"


def monitor_checkpoint_key(model: str) -> str:
    return f"{MONITOR_ROOT}{check_name(model)}/{MONITOR_CHECKPOINT_FILE}"


def monitor_unwatched_key(model: str) -> str:
    return f"{MONITOR_ROOT}{check_name(model)}/{MONITOR_UNWATCHED_FILE}"


def monitor_versions_prefix(model: str) -> str:
    return f"{MONITOR_ROOT}{check_name(model)}/versions/"


def monitor_version_state_key(model: str, version: str) -> str:
    """The state of ``model`` as it last was while ``version`` was its champion: kept after a promotion."""
    return f"{monitor_versions_prefix(model)}{check_version(version)}.json"
