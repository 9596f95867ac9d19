"""The ``tools`` and ``mcp_servers`` keys: loading from file and environment, clear errors, secrets."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from chatbridge.config import ConfigError, load_config, unknown_environment
from chatbridge.logging_setup import configure_logging, configured_secrets

TOKEN = "mcp-token-5f4e3d2c1b"


@pytest.fixture(autouse=True)
def _no_chatbridge_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("CHATBRIDGE_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_server_from_the_file_gets_its_header_secret_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "mcp_servers:\n  search:\n    url: http://127.0.0.1:9/mcp\n    tools: [lookup]\n")
    variable = "CHATBRIDGE_MCP_SERVERS__SEARCH__HEADERS__AUTHORIZATION"
    monkeypatch.setenv(variable, f"Bearer {TOKEN}")

    assert unknown_environment({variable: "x"}) == []
    config = load_config(path)

    server = config.mcp_servers["search"]
    assert (server.url, server.tools, server.transport) == ("http://127.0.0.1:9/mcp", ["lookup"], "streamable HTTP")
    assert server.headers["authorization"].get_secret_value() == f"Bearer {TOKEN}"
    assert TOKEN not in repr(config)
    assert {f"Bearer {TOKEN}", TOKEN} <= set(configured_secrets(config))


def test_the_header_secret_is_redacted_from_log_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATBRIDGE_MCP_SERVERS__SEARCH__URL", "http://127.0.0.1:9/mcp")
    monkeypatch.setenv("CHATBRIDGE_MCP_SERVERS__SEARCH__HEADERS__X_API_KEY", TOKEN)
    config = load_config(write(tmp_path, ""))
    stream = io.StringIO()
    configure_logging(secrets=configured_secrets(config), stream=stream)
    try:
        logging.getLogger("chatbridge.tools").warning("server said: bad key %s", TOKEN)
    finally:
        configure_logging(stream=io.StringIO())

    assert "bad key ***" in stream.getvalue() and TOKEN not in stream.getvalue()


def test_a_misspelt_variable_under_a_server_names_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATBRIDGE_MCP_SERVERS__SEARCH__URL", "http://127.0.0.1:9/mcp")
    monkeypatch.setenv("CHATBRIDGE_MCP_SERVERS__SEARCH__HEADRES__AUTHORIZATION", "x")

    with pytest.raises(
        ConfigError,
        match=r"mcp_servers\.search\.headres: unknown key; did you mean mcp_servers\.search\.headers\? \(from CHATBRIDGE_MCP_SERVERS__SEARCH__HEADRES__AUTHORIZATION\)",
    ):
        load_config(write(tmp_path, ""))


def test_a_misspelt_section_variable_gets_the_nearest_key() -> None:
    problems = unknown_environment({"CHATBRIDGE_MCP_SERVER__SEARCH__URL": "x", "CHATBRIDGE_TOOLS__ENABLD": "1"})

    assert problems == [
        "CHATBRIDGE_MCP_SERVER__SEARCH__URL: no such setting; did you mean CHATBRIDGE_MCP_SERVERS?",
        "CHATBRIDGE_TOOLS__ENABLD: no such setting; did you mean CHATBRIDGE_TOOLS__ENABLED?",
    ]


def test_a_stdio_server_is_refused_unless_allowed(tmp_path: Path) -> None:
    text = "mcp_servers:\n  files:\n    command: python\n    args: [server.py]\n"

    with pytest.raises(ConfigError, match=r"mcp_servers\.files\.command: .*set tools\.allow_stdio: true"):
        load_config(write(tmp_path, text))
    config = load_config(write(tmp_path, "tools:\n  allow_stdio: true\n" + text))
    assert config.mcp_servers["files"].transport == "stdio"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "mcp_servers:\n  s:\n    url: http://h/mcp\n    command: x\n",
            r"mcp_servers\.s: set either url .* or command",
        ),
        ("mcp_servers:\n  s: {}\n", r"mcp_servers\.s: set either url"),
        ("mcp_servers:\n  s:\n    url: ftp://h/mcp\n", r"mcp_servers\.s\.url: must be an http:// or https:// URL"),
        ("mcp_servers:\n  s:\n    url: http://h/mcp\n    args: [a]\n", r"args and env are for stdio servers"),
        ("mcp_servers:\n  Search:\n    url: http://h/mcp\n", r"mcp_servers\.Search\.\[key\]: String should match"),
        ("tools:\n  allow_users: [bob]\n", r"tools\.allow_users: "),
        ("mcp_servers:\n  s:\n    url: http://h/mcp\n    allow_chats: [nowhere]\n", r"mcp_servers\.s\.allow_chats: "),
        ("tools:\n  confirm: sometimes\n", r"tools\.confirm: Input should be 'always', 'unless_read_only' or 'never'"),
    ],
)
def test_bad_tool_settings_name_their_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))
