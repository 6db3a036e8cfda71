"""Finding the stack a command or an application talks to, the same way everywhere.

Every ``streamml`` command and the SDK look, in this order:

1. the ``--state-dir`` flag (``state_dir`` here): a folder ``streamml up`` made;
2. the environment: ``STREAMML_STACK_DIR`` (such a folder), then
   ``STREAMML_CONFIG_FILE`` (a settings file), then ``STREAMML_KAFKA_*`` and
   ``STREAMML_S3_*`` settings (a deployment reached without a stack folder);
3. the nearest state folder: ``.streamml/`` in the current folder or the
   closest folder above it that has one.

Nothing found is an error that lists where it looked and how to point
elsewhere, never a silent fall back to defaults (which would reach for AWS)::

    settings = find_settings()                       # an application
    settings = find_settings(Path("/tmp/stack"))     # streamml ... --state-dir /tmp/stack
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from streamml.settings import CONFIG_FILE_ENV, ServiceSettings, load_settings

STACK_DIR_ENV = "STREAMML_STACK_DIR"
STATE_FOLDER = ".streamml"
# The settings file `streamml up` writes into its state folder.
CLIENT_CONFIG = "config.yaml"
# Variables that configure a deployment directly, without a stack folder.
DIRECT_PREFIXES = ("STREAMML_KAFKA_", "STREAMML_S3_")
HOW_TO_POINT = (f"start a stack here with `streamml up`, or point at one with --state-dir DIR or {STACK_DIR_ENV}=DIR "
                f"(a deployment without a stack folder: {CONFIG_FILE_ENV}=FILE or STREAMML_KAFKA_* and "
                "STREAMML_S3_* settings)")

S = TypeVar("S", bound=ServiceSettings)


class StackNotFound(Exception):
    """No stack where streamml looked; the message lists the places and how to point elsewhere."""


@dataclass(frozen=True)
class Found:
    """Where the settings come from: a stack's folder, a settings file, or the environment alone."""

    how: str  # "--state-dir", STREAMML_STACK_DIR, STREAMML_CONFIG_FILE, "environment", "nearest"
    state_dir: Path | None = None
    config_file: Path | None = None

    def describe(self) -> str:
        if self.state_dir is not None:
            return f"the stack in {self.state_dir} ({self.how})"
        if self.config_file is not None:
            return f"{self.config_file} ({self.how})"
        return "STREAMML_* settings in the environment"


def nearest_state_folder(start: Path | None = None) -> Path | None:
    """``.streamml/`` holding a stack, in ``start`` (default: the current folder) or the closest folder above."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / STATE_FOLDER
        if (candidate / CLIENT_CONFIG).is_file() or (candidate / "state-format.json").is_file():
            return candidate
    return None


def locate(state_dir: Path | None = None, environ: dict[str, str] | None = None, cwd: Path | None = None) -> Found:
    """Where the settings come from, in the order of this module's docstring; StackNotFound when nowhere."""
    env = os.environ if environ is None else environ
    if state_dir is not None:
        return _stack(Path(state_dir), "--state-dir")
    if env.get(STACK_DIR_ENV):
        return _stack(Path(env[STACK_DIR_ENV]), STACK_DIR_ENV)
    if env.get(CONFIG_FILE_ENV):
        return Found(CONFIG_FILE_ENV, config_file=Path(env[CONFIG_FILE_ENV]))
    if any(name.startswith(DIRECT_PREFIXES) for name in env):
        return Found("environment")
    here = (cwd or Path.cwd()).resolve()
    nearest = nearest_state_folder(here)
    if nearest is not None:
        return _stack(nearest, f"nearest {STATE_FOLDER} to {here}")
    raise StackNotFound(
        f"no streamml stack found: --state-dir not given, {STACK_DIR_ENV} and {CONFIG_FILE_ENV} unset, no "
        f"STREAMML_KAFKA_*/STREAMML_S3_* settings, and no {STATE_FOLDER}/{CLIENT_CONFIG} in {here} or any folder "
        f"above it; {HOW_TO_POINT}")


def _stack(folder: Path, how: str) -> Found:
    folder = folder.expanduser().resolve()
    config = folder / CLIENT_CONFIG
    if not config.is_file():
        raise StackNotFound(
            f"no stack in {folder} (from {how}): it has no {CLIENT_CONFIG}, which `streamml up` writes there "
            f"once the stack has started; {HOW_TO_POINT}")
    return Found(how, state_dir=folder, config_file=config)


def find_settings(state_dir: Path | None = None, settings_cls: type[S] = ServiceSettings) -> S:  # type: ignore[assignment]
    """Settings of the stack found as this module says; StackNotFound or SettingsError when there are none."""
    found = locate(state_dir)
    return load_settings(settings_cls, config_file=found.config_file)
