"""`serve` settings: one table for the command line, TOML file, environment and README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sandbox_ssh._cli.options import SERVE_SETTINGS
from sandbox_ssh._cli.settings import markdown_table
from sandbox_ssh.cli import main

REPO = Path(__file__).resolve().parents[2]


def check_config(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, ["serve", *args, "--check-config"], env=env or {})


def effective(result: Result) -> dict[str, str]:
    assert result.exit_code == 0, result.output
    values = {}
    for line in result.output.splitlines():
        if " = " in line and not line.startswith("#"):
            key, value = line.split(" = ", 1)
            values[key] = value
    return values


def test_command_line_over_environment_over_file_over_default(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('max-sessions = 3\nban_time = "5m"\naccept-env = ["LANG", "LC_*"]\n')
    env = {"SANDBOX_SSH_MAX_SESSIONS": "4"}
    assert effective(check_config())["max-sessions"] == "10"
    assert effective(check_config("--config", str(config)))["max-sessions"] == "3"
    both = effective(check_config("--config", str(config), env=env))
    assert both["max-sessions"] == "4"
    assert both["ban-time"] == "300.0" and both["accept-env"] == '["LANG", "LC_*"]'
    cli = check_config("--config", str(config), "--max-sessions", "5", env=env)
    assert effective(cli)["max-sessions"] == "5"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max-sesions = 3\n", "key 'max-sesions': unknown setting"),
        ('max-sessions = "many"\n', "key 'max-sessions': 'many' is not a valid integer"),
        ("max-sessions = 0\n", "key 'max-sessions': 0 is not in the range x>=1"),
        ('listen = "nowhere"\n', "key 'listen': listen address 'nowhere' is not HOST:PORT"),
        ('idle-stop = "soon"\n', "key 'idle-stop': duration 'soon' is not like 90s, 5m or 1h30m"),
        ("auto-start = 1\n", "key 'auto-start': 1 is not a boolean"),
        ("max-sessions = [1\n", "not valid TOML"),
    ],
)
def test_a_bad_file_stops_with_one_line_naming_key_and_file(
    tmp_path: Path, text: str, expected: str
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(text)
    result = check_config("--config", str(config))
    assert result.exit_code == 2
    message = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(message) == 1 and str(config) in message[0] and expected in message[0]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SANDBOX_SSH_MAX_SESSIONS": "x"}, "SANDBOX_SSH_MAX_SESSIONS: 'x' is not a valid integer"),
        ({"SANDBOX_SSH_MAX_SESIONS": "3"}, "SANDBOX_SSH_MAX_SESIONS: unknown setting"),
        ({"SANDBOX_SSH_COMPRESSION": "maybe"}, "'maybe' is not a boolean"),
    ],
)
def test_a_bad_environment_variable_is_named(env: dict[str, str], expected: str) -> None:
    result = check_config(env=env)
    assert result.exit_code == 2 and expected in result.output


# Regression: on a real cluster the Deployment crash-looped with "environment variable
# SANDBOX_SSH_PORT: unknown setting", the Service link of a Service named sandbox-ssh.
def test_kubernetes_service_links_in_a_pod_are_not_taken_for_settings() -> None:
    links = {
        "SANDBOX_SSH_PORT": "tcp://10.96.0.10:22",
        "SANDBOX_SSH_PORT_22_TCP": "tcp://10.96.0.10:22",
        "SANDBOX_SSH_PORT_22_TCP_ADDR": "10.96.0.10",
        "SANDBOX_SSH_PORT_22_TCP_PROTO": "tcp",
        "SANDBOX_SSH_SERVICE_HOST": "10.96.0.10",
        "SANDBOX_SSH_SERVICE_PORT_SSH": "22",
        "SANDBOX_SSH_METRICS_SERVICE_PORT": "9090",
    }
    in_pod = check_config(env={**links, "KUBERNETES_SERVICE_HOST": "10.96.0.1"})
    assert in_pod.exit_code == 0, in_pod.output
    # Outside a pod, and for any other name, a misspelt setting is still an error.
    outside = check_config(env={"SANDBOX_SSH_PORT": "tcp://10.96.0.10:22"})
    assert outside.exit_code == 2 and "SANDBOX_SSH_PORT: unknown setting" in outside.output
    typo = check_config(env={"SANDBOX_SSH_MAX_SESIONS": "3", "KUBERNETES_SERVICE_HOST": "x"})
    assert typo.exit_code == 2 and "SANDBOX_SSH_MAX_SESIONS: unknown setting" in typo.output


def test_check_config_redacts_credentials(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('ensure-url = "https://hook:s3cret@hooks.example/ensure?token=abc123"\n')
    result = check_config("--config", str(config))
    assert effective(result)["ensure-url"] == '"https://***@hooks.example/ensure?***"'
    assert "s3cret" not in result.output and "abc123" not in result.output


def test_check_config_redacts_set_env_values(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('set-env = ["API_TOKEN=s3cret", "LANG=C.UTF-8"]\n')
    result = check_config("--config", str(config))
    assert effective(result)["set-env"] == '["API_TOKEN=***", "LANG=***"]'
    assert "s3cret" not in result.output


def test_lists_are_comma_separated_in_the_environment() -> None:
    env = {"SANDBOX_SSH_ACCEPT_ENV": "LANG, LC_*", "SANDBOX_SSH_COMPRESSION": "yes"}
    values = effective(check_config(env=env))
    assert values["accept-env"] == '["LANG", "LC_*"]' and values["compression"] == "true"


def test_the_example_config_in_deploy_is_valid() -> None:
    values = effective(check_config("--config", str(REPO / "deploy" / "sandbox-ssh.toml")))
    assert values["listen"].startswith('"')


def test_help_file_environment_and_readme_cannot_drift() -> None:
    # The README's table is generated from the settings (scripts/readme-options.py).
    readme = (REPO / "README.md").read_text()
    section = readme.split("## `sandbox-ssh serve`", 1)[1].split("\n## ", 1)[0]
    assert markdown_table(SERVE_SETTINGS) in section, "run scripts/readme-options.py"
    assert "SANDBOX_SSH_<OPTION>" in section
    help_text = " ".join(CliRunner().invoke(main, ["serve", "--help"]).output.split())
    for setting in SERVE_SETTINGS:
        assert f"--{setting.name}" in help_text, setting.name
        assert setting.env == "SANDBOX_SSH_" + setting.name.upper().replace("-", "_")
    documented = set(re.findall(r"^\| `--([a-z0-9-]+)", section, re.MULTILINE))
    assert documented == {setting.name for setting in SERVE_SETTINGS}
