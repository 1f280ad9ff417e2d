"""Validating a pydantic model from raw data, every error at once: each as ``key: what was expected
(found value)`` in the data's own keys, and the model built with each invalid field at its default, so
that checks of the valid rest can run beside the errors (``alignx.preflight``).
"""

from __future__ import annotations

import copy
import itertools
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


def validate_fields(model: type[Model], raw: dict[str, Any]) -> tuple[Model | None, list[str], frozenset[str]]:
    """``model`` validated from ``raw``: the instance with each invalid field at its default (None when
    even that cannot be built), every problem, and the invalid fields as dotted paths.

    Each pass leaves the fields that failed at their defaults and validates again, so a check that
    needs a valid neighbour (a config's ``arms`` needs its ``stage2``) runs too. A later pass's error is
    reported unless it touches a field already left out (a default need not fit the given neighbours).
    """
    raw = copy.deepcopy(raw)
    problems: list[str] = []
    invalid: set[str] = set()
    while True:
        try:
            return model.model_validate(raw), problems, frozenset(invalid)
        except ValidationError as exc:
            errors = exc.errors()
        fresh = [err for err in errors if not any(paths_overlap(_where(raw, err), path) for path in invalid)]
        problems += [line for line in _problems(raw, fresh) if line not in problems]
        dropped = {path for path in (_drop_invalid(raw, err) for err in errors) if path}
        if not dropped:  # an error no given field carries (a missing key, a default that does not fit)
            return None, problems, frozenset(invalid)
        invalid |= dropped


def paths_overlap(a: str, b: str) -> bool:
    """Whether two dotted paths name the same field or one holds the other."""
    return a == b or a.startswith(f"{b}.") or b.startswith(f"{a}.")


def _problems(raw: dict[str, Any], errors: list[Any]) -> list[str]:
    """Validation errors as ``key: what was expected (found value)``, one line per key: the alternatives
    of a union (``align_layer``: an integer or 'middle') share their key's line."""
    lines: dict[str, list[str]] = {}
    found: dict[str, Any] = {}
    for err in errors:
        where = _where(raw, err)
        if err["msg"] not in lines.setdefault(where, []):
            lines[where].append(err["msg"])
        value = err.get("input")
        if err["type"] != "missing" and isinstance(value, str | int | float | bool) and repr(value) not in err["msg"]:
            found[where] = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    return [f"{where}: {'; or '.join(msgs)}" + (f" (found {found[where]})" if where in found else "")
            for where, msgs in lines.items()]


def _where(raw: dict[str, Any], err: Any) -> str:
    """The dotted key an error is about ("<root>" for the data as a whole)."""
    return ".".join(map(str, _key_loc(raw, err))) or "<root>"


def _key_loc(raw: dict[str, Any], err: Any) -> tuple[int | str, ...]:
    """An error's location as far as it names keys of ``raw``: past a value it gives come the union
    members pydantic tried (``align_layer.int``); a key it leaves out (a default or a missing key) ends it."""
    loc, node = err["loc"], raw
    for n, part in enumerate(loc):
        if isinstance(node, dict) and part not in node:
            return loc[: n + 1]
        if not (isinstance(node, dict) or isinstance(node, list) and isinstance(part, int) and part < len(node)):
            return loc[:n]
        node = node[part]
    return loc


def _drop_invalid(raw: dict[str, Any], err: Any) -> str | None:
    """Remove the field an error is about, so its default takes over; its dotted path (None: nothing to
    remove, the field is at its default already). A list item's error removes the whole list."""
    keys = list(itertools.takewhile(lambda p: isinstance(p, str), _key_loc(raw, err)))
    node = raw
    for key in keys[:-1]:
        node = node[key]
    if not keys or keys[-1] not in node:
        return None
    del node[keys[-1]]
    return ".".join(keys)
