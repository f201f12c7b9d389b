"""The README's configuration table and recipe table match the code."""

from __future__ import annotations

from pathlib import Path

from visionops.config import CONFIG_FIELDS
from visionops.env import config_env_var
from visionops.recipes import list_recipes

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_config_field_is_documented_with_its_default() -> None:
    text = README.read_text()
    for spec in CONFIG_FIELDS.values():
        default = ",".join(spec.default) if isinstance(spec.default, tuple) else spec.default
        row = (
            f"| `{spec.flag}` | `{config_env_var(spec.flat)}` | `{default}` | {spec.description} |"
        )
        assert row in text, f"README configuration table is out of date for {spec.flat}"


def test_every_recipe_is_documented() -> None:
    text = README.read_text()
    for recipe in list_recipes():
        assert f"| `{recipe.name}` |" in text


def test_every_server_setting_is_documented_with_its_default() -> None:
    from visionops.server.settings import ServerSettings, env_var

    text = README.read_text()
    for name, field in ServerSettings.model_fields.items():
        default = "unset" if field.default is None else field.default
        row = f"| `{env_var(name)}` | `{default}` | {field.description} |"
        assert row in text, f"README server settings table is out of date for {name}"
