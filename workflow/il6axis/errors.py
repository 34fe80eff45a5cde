"""Exception types shared by the il6axis modules.

Every problem caused by an input file or a config value raises :class:`InputError`. Its message names
the file (or config key), the field/column/row at fault and how to fix it, so a user can act on the
message alone without reading a traceback.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input data or configuration (not a bug in the workflow).

    Subclasses ``ValueError`` so generic callers that already catch ``ValueError`` keep working.
    """
