"""Configuration: the example file documents exactly the real keys, env overrides, clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from chatbridge.config import Config, ConfigError, load_config, unknown_environment
from tests.kit import docs

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"


def _keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= _keys(annotation, f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def _document_keys(document: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, value in document.items():
        if isinstance(value, dict) and value:  # an empty mapping (mcp_servers: {}) is a key of its own
            keys |= _document_keys(value, f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def test_example_file_lists_every_key_and_only_real_keys() -> None:
    document = yaml.safe_load(EXAMPLE.read_text())
    assert _document_keys(document) == _keys(Config)


def test_example_file_shows_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("CHATBRIDGE_"):
            monkeypatch.delenv(name)
    assert load_config(EXAMPLE) == Config()


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: from-file\n  temperature: 0.1\n")
    monkeypatch.setenv("CHATBRIDGE_MODEL__NAME", "from-env")
    monkeypatch.setenv("CHATBRIDGE_MODEL__API_KEY", "sk-env")
    config = load_config(path)
    assert config.model.name == "from-env"
    assert config.model.temperature == 0.1
    assert config.model.api_key.get_secret_value() == "sk-env"
    assert "sk-env" not in repr(config)


def test_missing_default_file_is_fine_but_an_explicit_one_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config().store.backend == "sqlite"
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.yaml")


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("- model\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(path)


def test_a_malformed_identity_in_the_access_lists_names_the_key_and_the_shape(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("access:\n  admins: ['telegram:1', 'Telegram:1140']\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert "access.admins" in str(raised.value)
    assert "'Telegram:1140' is not an identity" in str(raised.value)


def test_an_environment_variable_that_names_no_setting_is_an_error_naming_the_nearest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHATBRIDGE_MODEL_API_KEY", "sk-typo")  # one underscore
    monkeypatch.setenv("CHATBRIDGE_MODL__NAME", "gpt")
    with pytest.raises(ConfigError) as raised:
        load_config()
    message = str(raised.value)
    assert "CHATBRIDGE_MODEL_API_KEY: no such setting; did you mean CHATBRIDGE_MODEL__API_KEY?" in message
    assert "CHATBRIDGE_MODL__NAME: no such setting; did you mean CHATBRIDGE_MODEL__NAME?" in message
    assert "sk-typo" not in message


def test_every_environment_variable_the_docs_mention_names_a_setting() -> None:
    files = [*docs.PAGES, *(docs.ROOT / name for name in ("config.example.yaml", "docker-compose.yml", "Dockerfile"))]
    mentioned = docs.variables_named(files)
    assert len(mentioned) > 10
    assert unknown_environment(dict.fromkeys(mentioned, "x")) == []


def test_named_models_fall_back_to_model_and_take_their_key_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "model: {name: cheap, temperature: 0.2}\n"
        "models:\n"
        "  vision: {name: big, vision: true, price_in_per_mtok: 2.5}\n"
        "  local: {base_url: 'http://127.0.0.1:11434/v1', name: llama}\n"
        "  other: {base_url: 'http://127.0.0.1:9/v1'}\n"
    )
    monkeypatch.setenv("CHATBRIDGE_MODEL__API_KEY", "sk-main")
    monkeypatch.setenv("CHATBRIDGE_MODELS__LOCAL__API_KEY", "sk-local")
    models = load_config(path).all_models()
    assert list(models) == ["default", "vision", "local", "other"]
    assert (models["vision"].name, models["vision"].temperature, models["vision"].vision) == ("big", 0.2, True)
    assert models["vision"].api_key.get_secret_value() == "sk-main"  # same server: the same key
    assert models["local"].api_key.get_secret_value() == "sk-local"
    assert models["other"].api_key.get_secret_value() == ""  # another server never gets model's key
    assert models["default"].vision is False


def test_a_key_of_a_model_entry_is_checked_in_the_environment() -> None:
    assert unknown_environment({"CHATBRIDGE_MODELS__LOCAL__API_KEY": "x", "CHATBRIDGE_PERSONAS__T__MODEL": "x"}) == []
    assert unknown_environment({"CHATBRIDGE_MODELS__LOCAL__APIKEY": "x"}) != []


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ("models: {Big: {name: x}}", "models: 'Big' is not a usable name"),
        ("models: {default: {name: x}}", "models: 'default' is the name of the model configured outside"),
        ("personas: {t: {system_prompt: x, model: nope}}", "personas: t.model: 'nope' is not a model"),
        ("personas: {t: {model: default}}", "personas.t.system_prompt: Field required"),
        ("limits: {timezone: Mars/Base}", "limits.timezone: 'Mars/Base' is not a time zone name"),
        ("limits: {user_tokens_per_day: -1}", "limits.user_tokens_per_day: Input should be greater than or equal"),
        ("bot: {group_settings: all}", "bot.group_settings: Input should be 'admins' or 'everyone'"),
    ],
)
def test_bad_model_persona_and_budget_keys_are_named(tmp_path: Path, document: str, expected: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(document + "\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert expected in str(raised.value)


def test_the_worked_example_of_the_models_page_is_a_valid_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = (EXAMPLE.parent / "docs" / "models-personas-budgets.md").read_text()
    document = page.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "config.yaml"
    path.write_text(document)
    monkeypatch.setenv("CHATBRIDGE_MODELS__LOCAL__API_KEY", "ollama")
    config = load_config(path)
    models = config.all_models()
    assert list(models) == ["default", "vision", "local"]
    assert models["vision"].vision and models["local"].api_key.get_secret_value() == "ollama"
    assert config.personas["translator"].model == "local"
    assert config.limits.user_tokens_per_day == 50_000
