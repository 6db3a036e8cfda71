"""Typed settings shared by every streamml service.

Values come, highest priority first, from environment variables prefixed
``STREAMML_`` (``STREAMML_KAFKA_BOOTSTRAP``, ``STREAMML_S3_ENDPOINT`` ...),
then from an optional YAML file named by ``STREAMML_CONFIG_FILE``, then from
the defaults below. Settings are frozen once loaded: a service reads them at
start and a bad value stops it there, never halfway through a batch.

    settings = load_settings(ServiceSettings)   # exits 2 on a bad value
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_core import to_json
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

ENV_PREFIX = "STREAMML_"
CONFIG_FILE_ENV = "STREAMML_CONFIG_FILE"
EXIT_BAD_SETTINGS = 2
# A settings file chosen by the caller (``load_settings(config_file=...)``), in place of STREAMML_CONFIG_FILE.
_CONFIG_FILE: ContextVar[Path | None] = ContextVar("streamml_config_file", default=None)


class Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(Group):
    bootstrap: str = Field(
        "127.0.0.1:9092",
        description="Kafka bootstrap servers, host:port[,host:port...]",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how clients talk to the brokers"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism, with a SASL_* protocol"
    )
    sasl_username: str | None = Field(None, description="SASL user name")
    sasl_password: SecretStr | None = Field(None, description="SASL password")
    ssl_ca_location: Path | None = Field(None, description="CA bundle (PEM) for TLS")
    ssl_certificate_location: Path | None = Field(None, description="client certificate (PEM) for TLS")
    ssl_key_location: Path | None = Field(None, description="client private key (PEM) for TLS")
    topic_prefix: str = Field("", description="prepended to every streamml topic name")
    group_prefix: str = Field("", description="prepended to every consumer group id")
    session_timeout_ms: int = Field(
        45_000, ge=6_000, le=300_000, description="consumer group session timeout, 6000 to 300000 ms"
    )
    connect_timeout_s: float = Field(10.0, gt=0, description="how long start waits for the broker")
    fetch_wait_max_ms: int = Field(
        500, ge=10, le=10_000,
        description="how long the broker may hold a consumer's fetch while a partition has nothing new; "
                    "lower cuts latency on idle topics, but a broker that reads from slow storage (Tansu on S3) "
                    "answers an unfilled fetch empty, so too low starves consumers with a backlog",
    )

    @field_validator("bootstrap")
    @classmethod
    def _host_port_list(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{server!r} is not host:port")
        return value

    def client_config(self) -> dict[str, Any]:
        """librdkafka properties for this cluster (credentials included)."""
        config: dict[str, Any] = {
            # librdkafka's own log lines go through Python logging (JSON).
            "logger": logging.getLogger("streamml.librdkafka"),
            "bootstrap.servers": self.bootstrap,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            config["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            config["sasl.password"] = self.sasl_password.get_secret_value()
        for name in ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location"):
            if (path := getattr(self, name)) is not None:
                config[name.replace("_", ".")] = str(path)
        return config

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"


class S3Settings(Group):
    endpoint: str | None = Field(
        None, description="S3 endpoint URL, e.g. http://127.0.0.1:7480 (unset: AWS)"
    )
    bucket: str = Field(
        "streamml", min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]+$",
        description="bucket for raw data, datasets and models (a valid S3 bucket name)",
    )
    region: str = Field("us-east-1", description="region for SigV4 signing")
    access_key_id: SecretStr | None = Field(None, description="S3 access key (unset: the AWS credential chain)")
    secret_access_key: SecretStr | None = Field(None, description="S3 secret key")
    create_bucket: bool = Field(True, description="create the bucket when it is missing")
    connect_timeout_s: float = Field(5.0, gt=0, description="seconds to wait for a connection")
    max_attempts: int = Field(5, ge=1, le=20, description="tries per request, with backoff, 1 to 20")

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} must start with http:// or https://")
        return value.rstrip("/") if value else value


class HttpSettings(Group):
    host: str = Field("127.0.0.1", description="address of /healthz, /readyz and /metrics")
    port: int = Field(8080, ge=0, le=65535, description="a TCP port, 0 picks a free one")


class ServiceSettings(BaseSettings):
    """Settings every service reads; a service subclasses this to add its own group."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="_",
        env_nested_max_split=1,
        frozen=True,
        extra="forbid",
    )

    kafka: KafkaSettings = KafkaSettings()
    s3: S3Settings = S3Settings()
    http: HttpSettings = HttpSettings()
    log: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="log level; logs are JSON lines on stderr"
    )
    state_dir: Path = Field(Path(".streamml"), description="local state: logs, caches, temp files")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config_file := _CONFIG_FILE.get() or os.environ.get(CONFIG_FILE_ENV):
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)


class SettingsError(Exception):
    """Raised with one readable line per bad setting."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


S = TypeVar("S", bound=ServiceSettings)


def env_name(location: tuple[Any, ...]) -> str:
    """('kafka', 'bootstrap') -> STREAMML_KAFKA_BOOTSTRAP."""
    parts = [str(part) for part in location if not isinstance(part, int)]
    return ENV_PREFIX + "_".join(parts).upper()


def describe_errors(error: ValidationError, settings_cls: type[BaseSettings]) -> list[str]:
    lines = []
    for item in error.errors(include_url=False):
        name = env_name(item["loc"])
        if item["type"] == "extra_forbidden":
            lines.append(f"unknown setting {name}: remove it or check its spelling")
            continue
        shown = "***" if _is_secret(settings_cls, item["loc"]) else repr(item.get("input"))
        hint = _field_description(settings_cls, item["loc"])
        fix = f"; expected {hint}" if hint else ""
        lines.append(f"invalid setting {name}={shown}: {item['msg']}{fix}")
    return lines


def load_settings(settings_cls: type[S], config_file: Path | None = None, **overrides: Any) -> S:
    """Build settings or raise SettingsError naming every bad value.

    ``config_file`` takes the place of STREAMML_CONFIG_FILE; STREAMML_* variables still win over it.
    """
    chosen = config_file or os.environ.get(CONFIG_FILE_ENV)
    if chosen:
        _check_config_file(Path(chosen))
    token = _CONFIG_FILE.set(Path(config_file) if config_file else None)
    try:
        return settings_cls(**overrides)
    except ValidationError as error:
        raise SettingsError(describe_errors(error, settings_cls)) from None
    finally:
        _CONFIG_FILE.reset(token)


def load_settings_or_exit(settings_cls: type[S], config_file: Path | None = None, **overrides: Any) -> S:
    try:
        return load_settings(settings_cls, config_file, **overrides)
    except SettingsError as error:
        for line in error.lines:
            print(f"streamml: {line}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_SETTINGS) from None


def _check_config_file(path: Path) -> None:
    if not path.is_file():
        raise SettingsError([f"invalid setting {CONFIG_FILE_ENV}={str(path)!r}: no such file"])
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SettingsError([f"invalid setting {CONFIG_FILE_ENV}={str(path)!r}: {error}"]) from None
    if content is not None and not isinstance(content, dict):
        raise SettingsError(
            [f"invalid setting {CONFIG_FILE_ENV}={str(path)!r}: top level must be a mapping"]
        )


def _field(settings_cls: type[BaseModel], loc: tuple[Any, ...]) -> Any:
    model: Any = settings_cls
    info = None
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return info
        info = fields[part]
        model = info.annotation
    return info


def _is_secret(settings_cls: type[BaseModel], loc: tuple[Any, ...]) -> bool:
    info = _field(settings_cls, loc)
    return info is not None and _holds_secret(info)


def _holds_secret(info: FieldInfo) -> bool:
    return "SecretStr" in str(info.annotation)


def _field_description(settings_cls: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    info = _field(settings_cls, loc)
    return info.description if info is not None else None


@dataclass(frozen=True)
class SettingHelp:
    """One setting as ``--help`` shows it."""

    variable: str
    default: str
    meaning: str


def settings_help(settings_cls: type[BaseModel]) -> list[SettingHelp]:
    """Every setting of ``settings_cls``, in declaration order, groups flattened."""
    return list(_settings_help(settings_cls, ()))


def _settings_help(model: type[BaseModel], location: tuple[str, ...]) -> Iterator[SettingHelp]:
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, Group):
            yield from _settings_help(info.annotation, (*location, name))
            continue
        notes = [info.description or ""]
        if choices := _choices(info.annotation):
            notes.append("one of " + ", ".join(choices))
        if _holds_secret(info):
            notes.append("secret, never printed")
        meaning = "; ".join(filter(None, notes))
        default = info.get_default(call_default_factory=True)
        # A None default validated at start is a value that must be set.
        required = info.is_required() or (default is None and info.validate_default)
        yield SettingHelp(env_name((*location, name)), "required" if required else _shown_default(default), meaning)


def _choices(annotation: Any) -> list[str]:
    if get_origin(annotation) is Literal:
        return [str(choice) for choice in get_args(annotation)]
    if get_origin(annotation) in (Union, UnionType):
        return [choice for member in get_args(annotation) for choice in _choices(member)]
    return []


def _shown_default(value: Any) -> str:
    if isinstance(value, BaseModel | list | dict):
        return to_json(value).decode()  # as the variable would be set
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if value == "":
        return "empty"
    return str(value)
