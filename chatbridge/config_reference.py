"""The configuration reference (docs/configuration.md), written from the settings model itself.

The model is where a key, its default, its bounds and its description are defined, so the reference
is generated from it rather than kept by hand beside it; a test compares the committed file with what
this module writes now, so a new key cannot reach the main branch undocumented.

    python -m chatbridge.config_reference                          # Markdown to stdout
    python -m chatbridge.config_reference docs/configuration.md    # or into the file
"""

from __future__ import annotations

import argparse
import enum
import json
import sys
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from chatbridge.config import ENV_PREFIX, Config

REFERENCE_PATH = Path("docs/configuration.md")
REGENERATE = f"python -m chatbridge.config_reference {REFERENCE_PATH}"

_INTRO = f"""\
# Configuration reference

<!-- Generated from the settings model by `{REGENERATE}`; edit the field descriptions in the
settings code (chatbridge/config.py, core/settings.py, core/media_settings.py, bots/settings.py,
bots/audio_settings.py, adapters/*/settings.py), not this file. -->

chatbridge reads one YAML file, `--config FILE`, by default `config.yaml` in the current folder when
it exists. Every key can be overridden by an environment variable: `{ENV_PREFIX}` plus the key's path
in capitals, with `__` between the levels, so `model.api_key` is `{ENV_PREFIX}MODEL__API_KEY` and
`adapters.slack.enabled` is `{ENV_PREFIX}ADAPTERS__SLACK__ENABLED`. The environment wins over the file,
and the file over the defaults below. Put secrets in the environment; they are never logged.

Unknown keys are errors, in the file and in the environment alike: a misspelt key stops start-up
with the nearest real one, and so does a variable such as `{ENV_PREFIX}MODEL_API_KEY` (one underscore):
"no such setting; did you mean {ENV_PREFIX}MODEL__API_KEY?". A bad value stops start-up with a message
naming the key and what is wrong (exit status 2). [`config.example.yaml`](../config.example.yaml)
shows every key with its default and a comment, ready to copy to `config.yaml`.
"""


@dataclass(frozen=True)
class Setting:
    """One key as the reference shows it."""

    key: str
    default: str
    values: str
    meaning: str
    described: bool
    """Whether the field has its own description (a test insists that every field has one)."""


@dataclass(frozen=True)
class Section:
    key: str
    settings: tuple[Setting, ...]
    about: str = ""
    """For the entries of a ``dict[str, Model]`` key: that key's own description."""


def render(config: type[BaseModel] = Config) -> str:
    """The whole reference as Markdown."""
    parts = [_INTRO]
    for section in sections(config):
        parts.append(f"{'#' * min(2 + section.key.count('.'), 4)} `{section.key}`\n")
        if section.about:
            parts.append(f"{section.about[0].upper()}{section.about[1:]}.\n")
        if section.key.startswith("adapters."):
            platform = section.key.removeprefix("adapters.")
            parts.append(f"Set-up and behaviour: [platforms/{platform}.md](platforms/{platform}.md).\n")
        if section.settings:
            rows = ["| key | default | values | meaning |", "|---|---|---|---|"]
            rows += [
                f"| `{s.key}` | {_escape(s.default)} | {_escape(s.values)} | {_escape(s.meaning)} |"
                for s in section.settings
            ]
            parts.append("\n".join(rows) + "\n")
    return "\n".join(parts)


def sections(model: type[BaseModel], prefix: str = "", about: str = "") -> Iterator[Section]:
    """Each section of ``model`` in definition order, a section's own keys before its subsections."""
    settings: list[Setting] = []
    subsections: list[tuple[str, type[BaseModel], str]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        if _is_model(annotation):
            subsections.append((key, typing.cast(type[BaseModel], annotation), ""))
            continue
        value_model = _mapping_value_model(annotation)
        if value_model is not None and not prefix:
            # A top-level mapping (mcp_servers) is a section of its own: its entries are the keys.
            subsections.append((f"{key}.<name>", value_model, field.description or ""))
            continue
        settings.append(_setting(key, field))
        if value_model is not None:
            subsections.append((f"{key}.<name>", value_model, ""))
    if prefix:
        yield Section(prefix.removesuffix("."), tuple(settings), about)
    for key, sub, sub_about in subsections:
        yield from sections(sub, f"{key}.", sub_about)


def undescribed(config: type[BaseModel] = Config) -> list[str]:
    """The keys whose field has no description."""
    return [s.key for section in sections(config) for s in section.settings if not s.described]


def _setting(key: str, field: FieldInfo) -> Setting:
    meaning = field.description or ""
    if field.annotation is SecretStr:
        variable = ENV_PREFIX + key.upper().replace(".", "__")
        meaning += f" (a secret: best set through `{variable}`)"
    choices = ", ".join(f"`{choice}`" for choice in _choices(field.annotation))
    values = "; ".join(part for part in (choices, _bounds(field)) if part)
    return Setting(key, _default(field), values, meaning.strip(), bool(field.description))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    return f"`{_yaml(value)}`"


def _yaml(value: Any) -> str:
    """A default as it would be written in config.yaml."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value:
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _choices(annotation: Any) -> list[str]:
    if typing.get_origin(annotation) is Literal:
        return [str(arg) for arg in typing.get_args(annotation)]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [str(member.value) for member in annotation]
    return []


def _bounds(field: FieldInfo) -> str:
    limits: dict[str, Any] = {}
    pattern = None
    for item in field.metadata:
        for kind in ("ge", "gt", "le", "lt"):
            if isinstance(item, getattr(annotated_types, kind.capitalize())):
                limits[kind] = getattr(item, kind)
        pattern = getattr(item, "pattern", None) or pattern
    words = []
    if "ge" in limits and "le" in limits:
        words.append(f"{limits['ge']} to {limits['le']}")
    else:
        for kind, word in (("ge", "at least"), ("gt", "more than"), ("le", "at most"), ("lt", "less than")):
            if kind in limits:
                words.append(f"{word} {limits[kind]}")
    if pattern:
        words.append(f"matching `{pattern}`")
    return ", ".join(words)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _mapping_value_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a ``dict[str, Model]`` key's values: its keys are documented as ``key.<name>.*``."""
    if typing.get_origin(annotation) is dict:
        value = typing.get_args(annotation)[1]
        if _is_model(value):
            return typing.cast(type[BaseModel], value)
    return None


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chatbridge.config_reference", description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", type=Path, help=f"write here (e.g. {REFERENCE_PATH}) instead of stdout")
    args = parser.parse_args(argv)
    text = render()
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
