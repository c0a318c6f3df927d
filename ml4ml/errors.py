"""The one error type users see: what was expected, what was found, where, how to fix."""

from __future__ import annotations


class ML4MLError(ValueError):
    """A user-facing error naming the file and field at fault.

    Parameters
    ----------
    message : what is wrong, what was expected and what was found.
    file : the file (or store) the bad value came from, if any.
    field : the field, variable or option at fault, if any.
    hint : how to fix it, if there is something better to say than the message.
    """

    def __init__(self, message: str, *, file=None, field=None, hint=None):
        self.message = message
        self.file = None if file is None else str(file)
        self.field = field
        self.hint = hint
        super().__init__(self._format())

    def _format(self) -> str:
        where = ""
        if self.file and self.field:
            where = f"{self.file}: field '{self.field}': "
        elif self.file:
            where = f"{self.file}: "
        elif self.field:
            where = f"field '{self.field}': "
        text = where + self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class SpecError(ML4MLError):
    """A pipeline spec (TOML) that does not validate."""


class StoreError(ML4MLError):
    """A store that is missing, malformed, or inconsistent with what is being written."""


class InputError(ML4MLError):
    """A bad input file, array or argument (wrong shape, NaNs, unknown name)."""
