"""Option precedence in one place: defaults < YAML file (``--config``) < ``HVDTRAIN_*`` < flags.

Click already resolves flag > environment variable > ``default_map`` > default, so the YAML
file becomes the command's ``default_map`` (set by the eager ``--config`` option before any
other option is read) and every option gets the environment variable ``HVDTRAIN_<NAME>``.
Unknown keys in a file are an error naming the key and the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from hvdtrain.errors import ConfigError

ENV_PREFIX = "HVDTRAIN_"
# Variables with a meaning of their own (host sources, rank plumbing) are not option mirrors.
NO_ENV_MIRROR = frozenset({"hostfile", "config", "json_output", "program"})


def load_config_file(path: str | Path, allowed: set[str]) -> dict[str, Any]:
    import yaml  # light, and only needed when a file is given

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise ConfigError(f"{path}: not valid YAML ({first})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value, got {type(data).__name__}")
    result: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in allowed:
            known = ", ".join(sorted(n.replace("_", "-") for n in allowed))
            raise ConfigError(f"{path}: unknown key {key!r}", hint=f"known keys: {known}")
        result[name] = value
    return result


def _config_callback(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if not value:
        return
    allowed = {p.name for p in ctx.command.params if p.name and p.name not in NO_ENV_MIRROR}
    ctx.default_map = {**(ctx.default_map or {}), **load_config_file(value, allowed)}


config_option = click.option(
    "--config",
    type=click.Path(dir_okay=False),
    is_eager=True,
    expose_value=False,
    callback=_config_callback,
    help="YAML file of options (keys as the long flags). Precedence: defaults < file < "
    "HVDTRAIN_* environment < flags.",
)


def mirror_env(command: click.Command) -> click.Command:
    """Give every option of ``command`` the environment variable ``HVDTRAIN_<NAME>``."""
    for param in command.params:
        if isinstance(param, click.Option) and param.name and param.name not in NO_ENV_MIRROR:
            param.envvar = ENV_PREFIX + param.name.upper()
            param.show_envvar = True
    return command
