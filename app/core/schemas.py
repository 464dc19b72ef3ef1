"""What every request body shares: no unknown fields, no non-finite numbers, no invisible text.

JSON has no Infinity, but `1e309` parses to one and Python's json accepts `NaN`; a stored
Infinity reads back as null and overflows every sum it joins. Control characters (C0, DEL, C1)
and the bidirectional overrides and isolates rewrite what a terminal, a log viewer or a console
shows (`ESC[2J` clears a screen, U+202E turns a serial backwards), and no name, note or reason
needs one: a multi-line note is not worth an escape channel into every operator's screen.
"""

import unicodedata
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

# U+202A-U+202E: embeddings and overrides; U+2066-U+2069: isolates.
_BIDI_CONTROLS = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))
# The same rule for clients that read the OpenAPI schema (ECMA and Python regex alike).
TEXT_PATTERN = r"^[^\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]*$"


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _visible(value: str) -> str:
    for char in value:
        if unicodedata.category(char) == "Cc" or char in _BIDI_CONTROLS:
            name = unicodedata.name(char, "control character")
            raise ValueError(
                f"must not contain control or bidirectional-override characters; "
                f"found U+{ord(char):04X} ({name})"
            )
    return value


# Every free text of a request body is a Text (codes, serials and VINs carry their own
# stricter patterns).
Text = Annotated[str, AfterValidator(_visible), Field(json_schema_extra={"pattern": TEXT_PATTERN})]

# The same rule as the code_format check constraints in the database.
CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
Code = Annotated[str, Field(min_length=1, max_length=64, pattern=CODE_PATTERN)]
Name = Annotated[Text, Field(min_length=1, max_length=200)]


class PatchModel(RequestModel):
    """A partial update: omitted fields stay as they are, and null is never a value."""

    @field_validator("*")
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Runs only for fields the client sent: defaults are not validated.
        if value is None:
            raise ValueError("may be omitted but not null")
        return value
