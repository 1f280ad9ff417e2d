"""Reading a profile: the YAML file, the overrides on top of it, and the whole config validated at once.

``data/profiles/<name>.yaml`` (or any path) -> raw dict with dotted or nested overrides applied ->
``PipelineConfig`` (``alignx.config``), every invalid field reported in one ``ConfigError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_origin

import yaml
from pydantic import BaseModel

from alignx.config import REPO_ROOT, ConfigError, PipelineConfig
from alignx.validation import validate_fields

PROFILES_DIR = REPO_ROOT / "data" / "profiles"


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def _deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _is_mapping_field(dotted_parent: list[str]) -> bool:
    """True when the config field at this dotted path is a free-form mapping (``eval.limit``), not a section."""
    model: Any = PipelineConfig
    annotation: Any = None
    for name in dotted_parent:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or name not in model.model_fields:
            return False
        annotation = model.model_fields[name].annotation
        model = annotation
    return get_origin(annotation) is dict


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    """Set a dotted key; ``null`` for a key of a mapping field removes it (``eval.limit.xcopa=null``)."""
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    if value is None and _is_mapping_field(keys[:-1]):
        node.pop(keys[-1], None)
        return
    node[keys[-1]] = value


def read_profile(profile: str | Path, overrides: dict[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    """The raw config of a profile (by name, ``data/profiles/<name>.yaml``, or path) with overrides
    applied, and the file it came from. Overrides are a nested dict or dotted keys
    (``{"stage1.lambda_ctr": 0}``). Raises ``ConfigError`` when the profile itself cannot be read."""
    path = Path(profile)
    if not path.suffix:
        path = PROFILES_DIR / f"{profile}.yaml"
        if not path.exists():
            raise ConfigError(
                repr(str(profile)),
                [f"unknown profile {str(profile)!r}; known profiles: {', '.join(available_profiles())}"],
            )
    if not path.exists():
        raise ConfigError(str(path), [f"profile file {path} does not exist"])
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"not valid YAML: {exc}"]) from None
    if not isinstance(raw, dict):
        raise ConfigError(str(path), ["expected a mapping at the top level"])
    raw.setdefault("name", path.stem)
    for key, value in (overrides or {}).items():
        if "." in key:
            _set_dotted(raw, key, value)
        elif isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = _deep_merge(raw[key], value)
        else:
            raw[key] = value
    return raw, str(path)


@dataclass(frozen=True)
class CheckedConfig:
    """A config validated as far as it goes, so that checks of the rest can run beside its problems.

    ``problems`` lists every invalid field (``key: what was expected``); ``config`` is the config with
    each invalid field left at its default (None when even that cannot be built) and ``invalid`` names
    those fields as dotted paths: a check that reads one of them has nothing valid to check.
    """

    source: str
    config: PipelineConfig | None
    problems: list[str]
    invalid: frozenset[str]

    def valid(self) -> PipelineConfig:
        """The config, or a ``ConfigError`` listing every problem."""
        if self.problems or self.config is None:
            raise ConfigError(self.source, self.problems)
        return self.config


def check_config(raw: dict[str, Any], source: str = "<dict>") -> CheckedConfig:
    """Validate a raw config dict, gathering every error, and build it with the invalid fields at their
    defaults (``alignx.validation.validate_fields``)."""
    config, problems, invalid = validate_fields(PipelineConfig, raw)
    return CheckedConfig(source, config, problems, invalid)


def check_profile(profile: str | Path, overrides: dict[str, Any] | None = None) -> CheckedConfig:
    """``read_profile`` then ``check_config``: every problem of the resulting config, and what is valid of it."""
    raw, source = read_profile(profile, overrides)
    return check_config(raw, source)


def load_profile(profile: str | Path, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Load a profile by name (``data/profiles/<name>.yaml``) or path and apply overrides.

    Overrides are a nested dict or dotted keys (``{"stage1.lambda_ctr": 0}``). Every problem in the
    resulting config is reported at once in one ``ConfigError``.
    """
    return check_profile(profile, overrides).valid()


def parse_config(raw: dict[str, Any], source: str = "<dict>") -> PipelineConfig:
    """Validate a raw config dict, gathering every error into one ``ConfigError``."""
    return check_config(raw, source).valid()
