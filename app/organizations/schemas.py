from datetime import datetime

from pydantic import BaseModel, ConfigDict

from app.core.schemas import Code, Name, PatchModel, RequestModel
from app.models import OrgRole


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
