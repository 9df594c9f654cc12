"""Settings come from defaults, roost.toml, the environment and overrides, in that order."""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.config import load_settings
from roost.errors import ConfigError


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings({"ROOST_CONFIG": str(tmp_path / "absent.toml")})
    assert settings.http_port == 8000
    assert settings.bus_url == "memory://"
    assert settings.resolved_database_url.startswith("sqlite:///")
    assert settings.resolved_database_url.endswith("roost-data/roost.db")


def test_precedence_file_then_env_then_overrides(tmp_path: Path) -> None:
    config = tmp_path / "roost.toml"
    config.write_text(
        'http_port = 9000\nlog_level = "debug"\ncors_origins = ["https://a.example"]\n'
    )
    env = {"ROOST_CONFIG": str(config), "ROOST_HTTP_PORT": "9100"}
    settings = load_settings(env)
    assert settings.http_port == 9100
    assert settings.log_level == "debug"
    assert settings.cors_origins == ("https://a.example",)
    assert load_settings(env, http_port=9200, log_level=None).http_port == 9200


def test_env_casts_and_lists(tmp_path: Path) -> None:
    env = {
        "ROOST_CONFIG": str(tmp_path / "none.toml"),
        "ROOST_CORS_ORIGINS": "https://a, https://b",
        "ROOST_DATA_DIR": str(tmp_path / "d"),
    }
    settings = load_settings(env)
    assert settings.cors_origins == ("https://a", "https://b")
    assert settings.data_dir == tmp_path / "d"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ROOST_HTTP_PORT": "eighty"}, "ROOST_HTTP_PORT"),
        ({"ROOST_TOKEN_TTL_S": "1.5"}, "ROOST_TOKEN_TTL_S"),
    ],
)
def test_bad_values_name_the_variable(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({"ROOST_CONFIG": str(tmp_path / "none.toml"), **env})


def test_unknown_key_in_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "roost.toml"
    config.write_text("htp_port = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'htp_port'"):
        load_settings({"ROOST_CONFIG": str(config)})
