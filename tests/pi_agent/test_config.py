"""The config file, the command line and the deploy files agree with each other."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest

from pi_agent.__main__ import build_parser, main
from pi_agent.config import AgentConfig, load_config

DEPLOY = Path(__file__).resolve().parents[2] / "pi_agent" / "deploy"


def test_example_config_loads_and_the_command_line_wins(tmp_path: Path) -> None:
    config = load_config(DEPLOY / "agent.example.toml", port=9999, token_file=None)
    assert config.transport == "ble" and config.ble_address == "AA:BB:CC:DD:EE:FF"
    assert config.port == 9999 and config.host == "0.0.0.0"
    assert config.token_file == "/etc/nilm/agent.token"
    token = tmp_path / "token"
    token.write_text("abc\n")
    assert load_config(token_file=str(token)).resolved_token(env={}) == "abc"
    assert AgentConfig().resolved_token(env={"NILM_AGENT_TOKEN": "xyz"}) == "xyz"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"transport": "zigbee"}, "transport"),
        ({"transport": "ble"}, "ble_address"),
        ({"transport": "http"}, "shelly_url"),
        ({"speed": 0.0}, "speed"),
        ({"start": "yesterday"}, "yesterday"),
    ],
)
def test_bad_settings_say_what_is_wrong(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(**values)


def test_unknown_keys_in_the_file_are_named(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text("[agent]\nportt = 1\n")
    with pytest.raises(ValueError, match="portt"):
        load_config(path)


def test_no_token_is_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NILM_AGENT_TOKEN", raising=False)
    assert main(["--transport", "sim"]) == 2
    assert "token" in capsys.readouterr().err


def test_systemd_units_run_options_that_exist() -> None:
    options = {o for a in build_parser()._actions for o in a.option_strings}
    for unit in ("nilm-agent.service", "nilm-flow.service"):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read(DEPLOY / unit)
        exec_start = shlex.split(parser["Service"]["ExecStart"])
        assert parser["Install"]["WantedBy"] == "multi-user.target"
        assert "--config" in exec_start
        if unit == "nilm-agent.service":
            assert exec_start[1:3] == ["-m", "pi_agent"]
            assert {a for a in exec_start if a.startswith("--")} <= options
        else:
            assert exec_start[1] == "run"


def test_pc_example_is_valid_nilm_settings() -> None:
    from nilm.settings import load_settings

    settings = load_settings(DEPLOY / "pc.example.toml", env={})
    assert settings.agent.url.endswith(":8765") and settings.agent.batch_limit == 5000
