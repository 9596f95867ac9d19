"""The whole configuration: one pydantic-settings model read from YAML and overridden by the environment.

Precedence, highest first: ``CHATBRIDGE_...`` environment variables (``__`` nests, as in
``CHATBRIDGE_MODEL__API_KEY``), then the YAML file, then the defaults written here, which
``config.example.yaml`` documents key by key. Every section forbids unknown keys, so a typo stops
start-up instead of being silently ignored.
"""

from __future__ import annotations

import difflib
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bots.audio_settings import AudioSettings
from bots.settings import ModelOverrides, ModelSettings
from chatbridge.registry import AdaptersSettings
from core.media_settings import MediaSettings
from core.settings import (
    DEFAULT_NAME,
    AccessSettings,
    BotSettings,
    ContextSettings,
    LimitsSettings,
    PersonaSettings,
    SessionSettings,
    StoreSettings,
    check_names,
)
from core.tool_settings import McpServerName, McpServerSettings, ToolsSettings, stdio_problems

DEFAULT_CONFIG_PATH = Path("config.yaml")


class ConfigError(Exception):
    """One line that names the offending key and what is wrong with it."""


class ServerSettings(BaseModel):
    """The one HTTP server: webhooks and the operational endpoints."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(
        "127.0.0.1", description="0.0.0.0 to be reached from other machines (the container image sets it)"
    )
    port: int = Field(
        8080, ge=0, le=65535, description="webhooks, /healthz, /readyz and /metrics; always served by `chatbridge run`"
    )
    max_concurrent_messages: int = Field(
        1000, gt=0, description="turns answered at once by one process; more wait in arrival order"
    )
    delivery_timeout_s: float = Field(
        120.0,
        gt=0,
        description="seconds that delivering an answer to a platform failing with 429, 5xx or no answer, "
        "and storing its turn while the store is down, are retried; a longer Retry-After gives up at once",
    )


class LogSettings(BaseModel):
    """How the bridge logs; see ``chatbridge.logging_setup``."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["text", "json"] = Field("text", description="text: readable lines; json: one JSON object per line")
    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="debug adds the libraries' own lines, which may contain message texts"
    )
    content: bool = Field(False, description="put message and reply texts into the per-message log line")


ENV_PREFIX = "CHATBRIDGE_"


class Config(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    model: ModelSettings = ModelSettings()
    models: dict[str, ModelOverrides] = Field(
        default_factory=dict, description="name -> the keys of model that differ; /model switches a chat to one"
    )
    personas: dict[str, PersonaSettings] = Field(
        default_factory=dict, description="name -> system_prompt, model, temperature; /persona switches a chat"
    )
    bot: BotSettings = BotSettings()
    context: ContextSettings = ContextSettings()
    session: SessionSettings = SessionSettings()
    access: AccessSettings = AccessSettings()
    limits: LimitsSettings = LimitsSettings()
    store: StoreSettings = StoreSettings()
    adapters: AdaptersSettings = AdaptersSettings()
    server: ServerSettings = ServerSettings()
    log: LogSettings = LogSettings()
    audio: AudioSettings = AudioSettings()
    media: MediaSettings = MediaSettings()
    tools: ToolsSettings = ToolsSettings()
    mcp_servers: dict[McpServerName, McpServerSettings] = Field(
        default_factory=dict,
        description="MCP servers whose tools are offered, by name: {url, headers} (streamable HTTP) or "
        "{command, args, env} (stdio); the name prefixes each tool's name",
    )

    @field_validator("models")
    @classmethod
    def _model_names(cls, models: dict[str, ModelOverrides]) -> dict[str, ModelOverrides]:
        check_names(list(models), "model")
        return models

    @field_validator("personas")
    @classmethod
    def _persona_names(cls, personas: dict[str, PersonaSettings], info: ValidationInfo) -> dict[str, PersonaSettings]:
        """Runs after ``models`` (the field order), so a persona's model can be checked against them."""
        check_names(list(personas), "persona (bot.system_prompt)")
        known = [DEFAULT_NAME, *info.data.get("models", {})]
        for name, persona in personas.items():
            if persona.model is not None and persona.model not in known:
                raise ValueError(f"{name}.model: {persona.model!r} is not a model; the models are {', '.join(known)}")
        return personas

    def all_models(self) -> dict[str, ModelSettings]:
        """Every model by name, ``default`` first: ``model`` itself, then each ``models`` entry over it."""
        return {DEFAULT_NAME: self.model} | {name: entry.applied_to(self.model) for name, entry in self.models.items()}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML document arrives as init keyword arguments; listing the environment first makes
        # CHATBRIDGE_* variables win over the file, which is where secrets are meant to come from.
        return (env_settings, init_settings)


def load_config(path: Path | None = None) -> Config:
    """Read and validate the configuration, raising ``ConfigError`` that lists every problem at
    once, each with its key and where its value came from (a file's line, or a variable).

    Without an explicit path a missing ``config.yaml`` is fine (defaults plus environment); a path
    that was asked for must exist.
    """
    explicit = path is not None
    path = path or DEFAULT_CONFIG_PATH
    problems = unknown_environment(os.environ)
    text = _read_text(path, required=explicit)
    document = _parse_yaml(text, path)
    try:
        config = Config(**document)
    except ValidationError as exc:
        lines = _lines_of_keys(text)
        problems += [_problem(error, _origin(error, path, lines, os.environ)) for error in exc.errors()]
    else:
        problems += stdio_problems(config.tools, config.mcp_servers)
    if problems:
        raise ConfigError(
            problems[0] if len(problems) == 1 else f"{len(problems)} problems:\n  " + "\n  ".join(problems)
        )
    return config


def unknown_environment(environ: Mapping[str, str]) -> list[str]:
    """Every ``CHATBRIDGE_*`` variable that names no setting, with the nearest one that does.

    pydantic-settings ignores them, so a typo (``CHATBRIDGE_MODEL_API_KEY``, one underscore) would
    leave the setting at its default without a word; design section 5 makes it an error instead.
    """
    known = _environment_names(Config, ENV_PREFIX)
    entries = _entry_sections(Config, ENV_PREFIX)
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known or _under_a_mapping(upper, known):
            continue
        if _an_entry_key(upper, entries):
            continue
        nearest = difflib.get_close_matches(upper, known, n=1, cutoff=0.6)
        hint = f"; did you mean {nearest[0]}?" if nearest else "; settings are CHATBRIDGE_<SECTION>__<KEY>"
        problems.append(f"{name}: no such setting{hint}")
    return problems


def _environment_names(model: type[BaseModel], prefix: str) -> dict[str, bool]:
    """The variable of every section and key of ``model``; True for a free-form mapping, under which
    any name is a key."""
    names: dict[str, bool] = {}
    for field_name, field in model.model_fields.items():
        name = f"{prefix}{field_name.upper()}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names[name] = False
            names.update(_environment_names(annotation, f"{name}__"))
        else:
            names[name] = typing.get_origin(annotation) is dict and not _of_sections(annotation)
    return names


def _of_sections(annotation: Any) -> bool:
    """A mapping whose entries are sections (``models``), whose keys are checked, not free-form."""
    entry = typing.get_args(annotation)[-1] if typing.get_args(annotation) else None
    return isinstance(entry, type) and issubclass(entry, BaseModel)


def _entry_sections(model: type[BaseModel], prefix: str) -> dict[str, type[BaseModel]]:
    """The variable of every mapping of named sections (``models``, ``personas``), with the section
    type of its entries: ``CHATBRIDGE_MODELS__LOCAL__API_KEY`` is the key ``api_key`` of the entry
    ``local``."""
    sections: dict[str, type[BaseModel]] = {}
    for field_name, field in model.model_fields.items():
        if typing.get_origin(field.annotation) is dict and _of_sections(field.annotation):
            sections[f"{prefix}{field_name.upper()}"] = typing.get_args(field.annotation)[1]
    return sections


def _an_entry_key(name: str, sections: Mapping[str, type[BaseModel]]) -> bool:
    for section, entry in sections.items():
        rest = name.removeprefix(f"{section}__")
        if rest == name:
            continue
        entry_name, sep, key = rest.partition("__")
        entry_keys = _environment_names(entry, "")  # an entry's own mappings (an MCP server's headers) too
        if entry_name and sep and (key in entry_keys or _under_a_mapping(key, entry_keys)):
            return True
    return False


def _under_a_mapping(name: str, known: Mapping[str, bool]) -> bool:
    return any(is_mapping and name.startswith(f"{key}__") for key, is_mapping in known.items())


def _read_text(path: Path, *, required: bool) -> str:
    if not path.exists():
        if required:
            raise ConfigError(f"config file {path} does not exist")
        return ""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None


def _parse_yaml(text: str, path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (model:, bot:, ...)")
    return document


def _lines_of_keys(text: str) -> dict[tuple[str, ...], int]:
    """The line of every key (and list item) of a YAML text that parsed, by its path."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, at: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                lines[(*at, str(key.value))] = key.start_mark.line + 1
                walk(value, (*at, str(key.value)))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[(*at, str(index))] = item.start_mark.line + 1
                walk(item, (*at, str(index)))

    root = yaml.compose(text) if text.strip() else None
    if root is not None:
        walk(root, ())
    return lines


def _origin(error: Any, path: Path, lines: Mapping[tuple[str, ...], int], environ: Mapping[str, str]) -> str:
    """Where the value at an error's key came from: a variable (which wins over the file), the
    file's line, or nowhere (a default that an enabled section needs filled in)."""
    location = tuple(str(part) for part in error["loc"])
    variables = {name.upper() for name in environ}
    for depth in range(len(location), 0, -1):
        variable = ENV_PREFIX + "__".join(part.upper() for part in location[:depth])
        if variable in variables:
            return f"from {variable}"
        # The key itself may be a mapping (an MCP server's headers), set by variables under it.
        under = sorted(name for name in variables if name.startswith(f"{variable}__"))
        if under and depth == len(location):
            return f"from {under[0]}"
    for depth in range(len(location), 0, -1):
        if location[:depth] in lines:
            return f"{path} line {lines[location[:depth]]}"
    return ""


def _problem(error: Any, origin: str) -> str:
    """One bad key in dotted form, with what is wrong; the offending value is left out since it may
    be a secret."""
    location = tuple(str(part) for part in error["loc"])
    key = ".".join(location) or "(top level)"
    where = f" ({origin})" if origin else ""
    if error["type"] != "extra_forbidden":
        return f"{key}: {error['msg'].removeprefix('Value error, ')}{where}"
    siblings = _keys_at(location[:-1])
    nearest = difflib.get_close_matches(location[-1], siblings, n=1, cutoff=0.6) if location else []
    hint = f"; did you mean {'.'.join((*location[:-1], nearest[0]))}?" if nearest else ""
    return f"{key}: unknown key{hint}{where}"


def _keys_at(location: tuple[str, ...]) -> list[str]:
    """The keys the section at ``location`` has (none when it is not a section)."""
    model: type[BaseModel] = Config
    parts = iter(location)
    for part in parts:
        field = model.model_fields.get(part)
        annotation = field.annotation if field is not None else None
        if typing.get_origin(annotation) is dict:  # name -> section (mcp_servers): the next part is a name
            annotation = typing.get_args(annotation)[1]
            next(parts, None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)
