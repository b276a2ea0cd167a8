"""Stage settings: small dataclasses filled from the JSON that Snakemake passes as a param.

Every stage command takes `--settings '<json object>'`; the JSON is the stage's section of
config/config.yaml (validated by the workflow schema), and `from_dict` turns it into the stage's
dataclass, refusing keys the dataclass does not know (a typo must not be silently ignored).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, TypeVar

from maskfield.errors import MaskfieldError

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any] | None, *, where: str = "settings", base: T | None = None) -> T:
    """Build dataclass `cls` from a (possibly nested) dict; unknown keys are an error.

    Keys the dict leaves out keep their defaults, nested ones included: a nested section is
    applied on top of the default its parent declares (`field(default_factory=...)`), so
    `{"train": {"iterations": 2000}}` keeps a backend's own `train` defaults and changes only
    the iterations. `base`: an instance to apply the dict on top of instead of the defaults.
    """
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise MaskfieldError(
            f"Unknown key(s) {unknown} in {where}; the known keys are {sorted(fields)}."
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        hint = hints.get(name)
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value, where=f"{where}.{name}", base=_nested_default(fields[name], base))
        kwargs[name] = value
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise MaskfieldError(f"Invalid {where}: {exc}.") from exc


def _nested_default(f: dataclasses.Field, parent: Any) -> Any:
    """The value a nested settings section starts from: the parent instance's, else the
    field's declared default (None: the section's class defaults)."""
    if parent is not None:
        return getattr(parent, f.name)
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
        return value if dataclasses.is_dataclass(value) else None
    return f.default if dataclasses.is_dataclass(f.default) else None


def parse_settings(cls: type[T], text: str | None, *, where: str = "--settings") -> T:
    """Parse the `--settings` JSON string of a CLI command into `cls`."""
    if not text:
        return cls()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MaskfieldError(f"{where} is not valid JSON ({exc}); pass a JSON object.") from exc
    if not isinstance(data, dict):
        raise MaskfieldError(f"{where} must be a JSON object, got {type(data).__name__}.")
    return from_dict(cls, data, where=where)


def to_dict(obj: Any) -> dict[str, Any]:
    """The JSON-able dict of a settings dataclass (stored in HDF5 attrs and checkpoints)."""
    return dataclasses.asdict(obj)
