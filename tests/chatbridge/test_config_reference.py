"""docs/configuration.md is what the settings model says now, and every key in it says what it is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from chatbridge.config_reference import REFERENCE_PATH, REGENERATE, render, undescribed

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_reference_is_what_the_settings_model_generates() -> None:
    committed = (ROOT / REFERENCE_PATH).read_text(encoding="utf-8")
    assert committed == render(), (
        f"{REFERENCE_PATH} does not match the settings model (a key was added, renamed or redescribed); "
        f"regenerate it from the repository root: {REGENERATE}"
    )


def test_every_setting_has_a_description() -> None:
    assert undescribed() == [], (
        "these settings have no description= in their Field(...), so the configuration reference "
        f"cannot say what they do: {', '.join(undescribed())}"
    )


def test_the_command_writes_the_file_it_prints(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "chatbridge.config_reference"]
    printed = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    subprocess.run([*command, str(tmp_path / "configuration.md")], check=True, cwd=ROOT)
    assert printed == (tmp_path / "configuration.md").read_text(encoding="utf-8") == render()


class _Persona(BaseModel):
    model_config = ConfigDict(extra="forbid")

    system_prompt: str = Field("", description="what the persona is told")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["fast", "careful"] = Field("fast", description="how to go about it")
    ratio: float = Field(1.0, ge=0.5, le=4.0, description="a factor")
    token: SecretStr = Field(SecretStr(""), description="the key")
    personas: dict[str, _Persona] = Field(default_factory=dict, description="name -> persona")
    plain: int = 3


class _Root(BaseModel):
    tools: _Section = _Section()


def test_a_section_shows_its_defaults_values_secrets_and_mapped_models() -> None:
    text = render(_Root)
    assert "## `tools`" in text
    assert "| `tools.mode` | `fast` | `fast`, `careful` | how to go about it |" in text
    assert "| `tools.ratio` | `1` | 0.5 to 4.0 | a factor |" in text
    assert '| `tools.token` | `""` |  | the key (a secret: best set through `CHATBRIDGE_TOOLS__TOKEN`) |' in text
    assert "| `tools.personas` | `{}` |  | name -> persona |" in text
    assert "### `tools.personas.<name>`" in text
    assert '| `tools.personas.<name>.system_prompt` | `""` |  | what the persona is told |' in text
    assert undescribed(_Root) == ["tools.plain"]


class _RootWithMapping(BaseModel):
    personas: dict[str, _Persona] = Field(default_factory=dict, description="personas by name")


def test_a_top_level_mapping_of_models_is_a_section_introduced_by_its_description() -> None:
    text = render(_RootWithMapping)
    assert "`personas.<name>`\n\nPersonas by name.\n" in text
    assert '| `personas.<name>.system_prompt` | `""` |  | what the persona is told |' in text
    assert undescribed(_RootWithMapping) == []
