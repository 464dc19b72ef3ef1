from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.core.schemas import RequestModel, Text
from app.models import OrgRole

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


class OrganizationCreate(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"code": "voltway", "name": "Voltway Swap Networks", "role": "operator"}]
        },
    )

    code: Code
    name: Name
    role: OrgRole


class OrganizationUpdate(PatchModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "Voltway Energy"}]})

    name: Name | None = None


class OrganizationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    code: str
    name: str
    role: OrgRole
    created_at: datetime
