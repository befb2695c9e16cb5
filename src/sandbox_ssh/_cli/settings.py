"""Every `sandbox-ssh serve` setting, defined once.

Each setting is at the same time a command-line option (``--max-sessions``), a
key of the TOML file given with ``--config`` (``max-sessions``, or
``max_sessions``) and an environment variable (``SANDBOX_SSH_MAX_SESSIONS``).
The command line wins over the environment, which wins over the file, which
wins over the default. ``--help``, the file, the environment and the README's
table all come from this list, and a test holds the README to it.
"""

from __future__ import annotations

import os
import re
import tomllib
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

ENV_PREFIX = "SANDBOX_SSH_"


@dataclass(frozen=True)
class Setting:
    name: str  # the long option without its dashes
    help: str
    type: Any = None
    default: Any = None
    multiple: bool = False
    flag: bool = False  # --name alone means True
    negatable: bool = False  # --name/--no-name
    metavar: str | None = None
    default_text: str | None = None  # what --help and the README show as the default
    callback: Callable[[click.Context, click.Parameter, Any], Any] | None = None
    hidden_value: bool = False  # may carry credentials: redacted by --check-config
    cli_only: bool = False  # not read from the file or the environment
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper().replace("-", "_")

    @property
    def param(self) -> str:
        return self.name.replace("-", "_")

    def option(self) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        declaration = f"--{self.name}/--no-{self.name}" if self.negatable else f"--{self.name}"
        kwargs: dict[str, Any] = {
            "help": self.help
            + (f" [default: {self.default_text}]" if self.default_text is not None else ""),
            "default": self.default,
            "show_default": self.default_text is None
            and self.default not in (None, (), False)
            and not self.multiple,
            **self.extra,
        }
        if self.type is not None:
            kwargs["type"] = self.type
        if self.multiple:
            kwargs["multiple"] = True
        if self.flag:
            kwargs["is_flag"] = True
        if self.metavar:
            kwargs["metavar"] = self.metavar
        if self.callback:
            kwargs["callback"] = self.callback
        return click.option(declaration, self.param, **kwargs)


class SettingsError(click.UsageError):
    """A setting from the file or the environment is unknown or invalid (one line)."""


def _env_value(setting: Setting, text: str) -> Any:
    if setting.multiple:
        return [item.strip() for item in text.split(",") if item.strip()]
    if setting.flag or setting.negatable:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise click.BadParameter(f"{text!r} is not a boolean (true or false)")
    return text


def _file_value(setting: Setting, value: Any) -> Any:
    if setting.multiple:
        if isinstance(value, list):
            return value
        return [value]
    if (setting.flag or setting.negatable) and not isinstance(value, bool):
        raise click.BadParameter(f"{value!r} is not a boolean (true or false)")
    if isinstance(value, (dict, list)):
        raise click.BadParameter(f"expected one value, got {type(value).__name__}")
    return value


def _check(ctx: click.Context, setting: Setting, value: Any, where: str) -> None:
    """Raise SettingsError naming ``where`` when ``value`` is not valid for ``setting``."""
    param = next(p for p in ctx.command.params if p.name == setting.param)
    try:
        param.process_value(ctx, value)
    except click.BadParameter as error:
        raise SettingsError(f"{where}: {error.message}") from None


# Kubernetes gives every pod variables for each Service of its namespace (unless the pod
# sets enableServiceLinks: false); a Service named sandbox-ssh yields SANDBOX_SSH_PORT,
# SANDBOX_SSH_SERVICE_HOST and so on, which are not settings.
_SERVICE_LINK = re.compile(
    ENV_PREFIX + r"(\w+_)?(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT(_\d+_(TCP|UDP|SCTP)(_\w+)?)?)"
)


def load_defaults(
    ctx: click.Context,
    settings: Iterable[Setting],
    config_path: Path | None,
    environ: Mapping[str, str] = os.environ,
) -> dict[str, Any]:
    """Values from the file, then the environment over them, validated; click's default_map."""
    by_key = {s.name: s for s in settings if not s.cli_only}
    by_key.update({s.param: s for s in by_key.values()})
    values: dict[str, Any] = {}
    if config_path is not None:
        try:
            document = tomllib.loads(config_path.read_text())
        except OSError as error:
            raise SettingsError(f"cannot read {config_path}: {error.strerror or error}") from None
        except tomllib.TOMLDecodeError as error:
            raise SettingsError(f"{config_path}: not valid TOML: {error}") from None
        for key, raw in document.items():
            setting = by_key.get(key)
            where = f"{config_path}: key {key!r}"
            if setting is None:
                raise SettingsError(f"{where}: unknown setting (see sandbox-ssh serve --help)")
            try:
                value = _file_value(setting, raw)
            except click.BadParameter as error:
                raise SettingsError(f"{where}: {error.message}") from None
            _check(ctx, setting, value, where)
            values[setting.param] = value
    for setting in {id(s): s for s in by_key.values()}.values():
        text = environ.get(setting.env)
        if text is None:
            continue
        where = f"environment variable {setting.env}"
        try:
            value = _env_value(setting, text)
        except click.BadParameter as error:
            raise SettingsError(f"{where}: {error.message}") from None
        _check(ctx, setting, value, where)
        values[setting.param] = value
    in_kubernetes_pod = "KUBERNETES_SERVICE_HOST" in environ
    unknown = sorted(
        name
        for name in environ
        if name.startswith(ENV_PREFIX)
        and name not in {s.env for s in by_key.values()}
        and not name.startswith(ENV_PREFIX + "TEST_")
        and not (in_kubernetes_pod and _SERVICE_LINK.fullmatch(name))
    )
    if unknown:
        raise SettingsError(f"environment variable {unknown[0]}: unknown setting")
    return values


def redact(setting: Setting, value: Any) -> Any:
    """A value fit to print: credentials in URLs, and the values of NAME=VALUE items,
    replaced by '***'."""
    if not setting.hidden_value or value in (None, "", ()):
        return value
    if isinstance(value, (list, tuple)):
        return [str(item).partition("=")[0] + "=***" for item in value]
    parsed = urllib.parse.urlsplit(str(value))
    netloc = parsed.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "***" if parsed.query else ""
    return urllib.parse.urlunsplit((parsed.scheme, netloc, parsed.path, query, ""))


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple, frozenset, set)):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def render(settings: Iterable[Setting], values: Mapping[str, Any]) -> str:
    """The effective settings as a TOML file that --config would accept."""
    lines = []
    for setting in settings:
        if setting.cli_only:
            continue
        value = values.get(setting.param)
        if value is None:
            lines.append(f"# {setting.name} is not set")
            continue
        lines.append(f"{setting.name} = {_toml(redact(setting, value))}")
    return "\n".join(lines) + "\n"


def _shown_default(setting: Setting) -> str:
    if setting.default_text is not None:
        return setting.default_text
    if setting.negatable:
        return "on" if setting.default else "off"
    if setting.flag or setting.default in (None, (), False):
        return "off" if setting.flag else "none"
    return str(setting.default)


def markdown_table(settings: Iterable[Setting]) -> str:
    """The README's table of settings, generated from the same list as --help."""
    rows = ["| Option | Default | Meaning |", "|---|---|---|"]
    for setting in settings:
        name = (
            f"`--{setting.name}/--no-{setting.name}`"
            if setting.negatable
            else f"`--{setting.name}`"
        )
        meaning = setting.help.replace("|", "\\|")
        rows.append(f"| {name} | {_shown_default(setting)} | {meaning} |")
    return "\n".join(rows) + "\n"
