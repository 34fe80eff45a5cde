"""Read the JSON files the workflow's rules hand each other (DE summaries, verdicts, source choices).

One reader, so that a missing, truncated or hand-edited file fails the same way everywhere: an
:class:`~il6axis.errors.InputError` that names the file, what it should have held and the rule that
rewrites it, instead of a bare ``JSONDecodeError`` or ``KeyError`` three calls later.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from il6axis.errors import InputError


def read_json(
    path: str | Path, *, what: str = "JSON file", rule: str | None = None, required: Sequence[str] = ()
) -> dict[str, Any]:
    """The JSON object in ``path``, checked to be an object that has every key in ``required``.

    ``what`` names the file in messages ("DE summary"); ``rule`` names the rule that writes it, so the
    message can say what to rerun.
    """
    path = Path(path)
    fix = f"rerun rule {rule} to rewrite it" if rule else "rewrite it"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found; {fix}.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: {what} is not valid JSON ({err}); {fix}.") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: {what} must hold a JSON object, found {type(data).__name__}; {fix}.")
    missing = [key for key in required if key not in data]
    if missing:
        raise InputError(f"{path}: {what} lacks {missing}; {fix}.")
    return data
