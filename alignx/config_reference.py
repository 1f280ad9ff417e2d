"""The reference of every profile key, generated from the config models (``alignx keys`` prints it;
``docs/profile-keys.md`` is its committed copy, which a test keeps equal to it).

Each key is listed dotted, with its type, its default and the comment its field carries in the source,
so the reference cannot drift from what the config accepts.
"""

from __future__ import annotations

import inspect
import re
import typing
from typing import Any

from pydantic import BaseModel

from alignx.config import PipelineConfig

_COMMENT = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+)$")
_FIELD = re.compile(r"^\s{4}(\w+)\s*:")
_HEADER = """# Profile keys

Generated from the config models by `alignx keys` (`alignx/config_reference.py`); do not edit by hand:
`tests/test_config_reference.py` fails when this file and the config disagree. Any key can be set in a
profile (`data/profiles/*.yaml`) or with `--set dotted.key=value` (a JSON value).
"""


def _comments(model: type[BaseModel]) -> dict[str, str]:
    """The trailing ``# comment`` of each field's line in the model's class body (and its bases')."""
    found: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
            continue
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):
            continue
        above: list[str] = []  # the comment lines just above a field describe it when its line has none
        for line in source.splitlines():
            stripped = line.strip()
            if stripped.startswith("#"):
                above.append(stripped.lstrip("#").strip())
                continue
            field = _FIELD.match(line)
            if field and field.group(1) in cls.model_fields:
                match = _COMMENT.match(line)
                trailing = re.sub(r"\s*#?\s*type: ignore.*$", "", match.group(2)).strip() if match else ""
                comment = trailing or " ".join(above)
                if comment:
                    found[field.group(1)] = comment
            above = []
    return found


def _type_name(annotation: Any) -> str:
    text = repr(annotation) if not isinstance(annotation, type) else annotation.__name__
    text = text.replace("typing.", "").replace("NoneType", "None")
    return re.sub(r"<class '([\w.]+)'>", lambda m: m.group(1).rsplit(".", 1)[-1], text)


def _section(annotation: Any) -> type[BaseModel] | None:
    """The config section a field holds (a model, possibly optional), or None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return args[0]
    return None


def keys(model: type[BaseModel] = PipelineConfig, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, comment) for every key the config accepts, sections expanded."""
    comments = _comments(model)
    rows = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        section = _section(field.annotation)
        if section is not None and not typing.get_origin(field.annotation) in (list, dict):
            rows.append((dotted, section.__name__, "", comments.get(name, section.__doc__ or "").split("\n")[0]))
            rows += keys(section, dotted + ".")
            continue
        default = field.get_default(call_default_factory=True)
        shown = "required" if field.is_required() else repr(default.model_dump() if isinstance(default, BaseModel) else default)
        rows.append((dotted, _type_name(field.annotation), shown, comments.get(name, "")))
    return rows


def reference_markdown() -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [_HEADER, "| key | type | default | what it is |", "|---|---|---|---|"]
    lines += [f"| `{k}` | `{cell(t)}` | {('`' + cell(d) + '`') if d else ''} | {cell(c)} |" for k, t, d, c in keys()]
    return "\n".join(lines) + "\n"
