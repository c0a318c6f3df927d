"""How spec problems read: one line each, ``file: field 'x.y': why``, collected per file.

``check_table`` validates one table with its model (``spec.schema``) and words each of
pydantic's errors (its field, error type and the value found) the way the field's ``Says``
asks: "expected <kind>, got <value>" for a wrong type, "expected <value>, got <value>" for
a value out of range or not allowed, "unknown field (did you mean ...?)" for a key the
table lacks.
"""

from __future__ import annotations

import difflib

import numpy as np
from pydantic import BaseModel, ValidationError

from ml4ml.errors import SpecError
from ml4ml.spec.schema import Says

__all__ = ["Problems", "check_table", "check_part", "unknown_keys", "did_you_mean", "is_int",
           "is_num", "table"]

# pydantic error types that mean "the right type, a value not allowed"
_VALUE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal",
                 "too_short", "too_long", "string_too_short", "string_too_long",
                 "string_pattern_mismatch", "value_error"}
_RANGES = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


class Problems:
    """Collects every problem of one spec file, raised together at the end."""

    def __init__(self, file, base=None):
        self.file = str(file)
        self.base = base
        self.items: list[str] = []

    def add(self, field_name: str, why: str) -> None:
        item = f"{self.file}: field '{field_name}': {why}"
        if item not in self.items:  # a bad default is one problem, however many models use it
            self.items.append(item)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        if len(self.items) == 1:  # one clear line: file, field, why
            err = SpecError(self.items[0].split(": ", 1)[1], file=self.file)
        else:
            err = SpecError(f"{len(self.items)} problems in pipeline spec:\n  "
                            + "\n  ".join(self.items), file=self.file)
        err.problems = list(self.items)
        raise err


def check_table(model: type[BaseModel], tab: dict, prefix: str, problems, *,
                origin: dict | None = None, skip=(), floats: bool = False
                ) -> BaseModel | None:
    """``tab`` validated by ``model``; None with each problem added (at ``prefix`` + the
    field, or at ``origin[field]`` + "." + the field for a value inherited from there).

    skip : fields whose problems are not reported (checked elsewhere).
    floats : an integer found in a float field is shown as a float (as a recipe holds it).
    """
    try:
        return model.model_validate(tab)
    except ValidationError as exc:
        errors = exc.errors()
    allowed = sorted(model.model_fields)
    # unknown keys first, in the table's order, then the fields' problems
    errors.sort(key=lambda e: e["type"] != "extra_forbidden")
    for error in errors:
        name = str(error["loc"][0]) if error["loc"] else ""
        if name in skip:
            continue
        where = f"{origin[name]}." if origin and name in origin else prefix
        if error["type"] == "extra_forbidden":
            problems.add(where + name, "unknown field" + did_you_mean(name, allowed))
            continue
        info = model.model_fields.get(name)
        says = next((m for m in info.metadata if isinstance(m, Says)), Says()) if info \
            else Says()
        value = tab.get(name)
        if floats and info is not None and info.annotation is float and is_int(value):
            value = float(value)  # as the recipe holds it
        problems.add(where + name, _why(says, error, value))
    return None


def check_part(model: type[BaseModel], tab: dict, prefix: str, problems, *, skip=()
               ) -> BaseModel | None:
    """``tab`` validated (problems added), or its valid fields alone when it is not (None
    when those lack a required field)."""
    checked = check_table(model, tab, prefix, problems, skip=skip)
    if checked is not None:
        return checked
    good = {}
    for key, value in tab.items():
        if key in model.model_fields:
            try:
                model.model_validate({**good, key: value})
                good[key] = value
            except ValidationError as exc:
                if any(e["loc"][:1] == (key,) for e in exc.errors()):
                    continue
                good[key] = value  # only a required field is missing so far
    try:
        return model.model_validate(good)
    except ValidationError:
        return None


def _why(says: Says, error: dict, value) -> str:
    """The message of one field's error: ``value`` is the whole value the table gave."""
    if says.why is not None:
        return says.why(value) if callable(says.why) else says.why
    if error["type"] == "missing":
        return f"required: expected {says.kind}"
    wrong_value = error["type"] in _VALUE_ERRORS or (
        error["type"] == "literal_error" and isinstance(error["input"], str))
    if wrong_value and says.value == "range":
        ctx = error.get("ctx") or {}
        op, limit = next(((_RANGES[k], v) for k, v in ctx.items() if k in _RANGES),
                         ("in range", ""))
        shown = float(value) if isinstance(limit, float) and is_num(value) else value
        return f"expected {op} {limit:g}, got {shown}"
    text = says.value if wrong_value and says.value else (says.kind or "another value")
    return f"expected {text}, got {value!r}"


def table(raw: dict, key: str, problems) -> dict:
    """``raw[key]`` when it is a table (or absent: {}); a problem otherwise."""
    value = raw.get(key, {})
    if not isinstance(value, dict):
        problems.add(key, f"expected a table [{key}], got {type(value).__name__}")
        return {}
    return value


def unknown_keys(tab: dict, allowed, prefix: str, problems) -> None:
    for key in tab:
        if key not in allowed:
            problems.add(prefix + key, "unknown field" + did_you_mean(key, sorted(allowed)))


def did_you_mean(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
