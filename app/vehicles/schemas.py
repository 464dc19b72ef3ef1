import re
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.core.schemas import RequestModel
from app.organizations.schemas import Code, PatchModel

VIN_LENGTH = 17
# ISO 3779: digits and capital letters except I, O and Q (they read as 1 and 0).
VIN_PATTERN = r"^[A-HJ-NPR-Z0-9]{17}$"
_VIN_CHAR = re.compile(r"[A-HJ-NPR-Z0-9]")


def _valid_vin(value: str) -> str:
    if len(value) != VIN_LENGTH:
        raise ValueError(f"a VIN has {VIN_LENGTH} characters, this one has {len(value)}")
    bad = sorted({c for c in value if not _VIN_CHAR.fullmatch(c)})
    if bad:
        raise ValueError(
            "a VIN has only digits and capital letters other than I, O and Q; "
            f"not allowed: {', '.join(repr(c) for c in bad)}"
        )
    return value


Vin = Annotated[
    str,
    AfterValidator(_valid_vin),
    Field(
        description="17-character vehicle identification number (ISO 3779)",
        json_schema_extra={"pattern": VIN_PATTERN, "minLength": 17, "maxLength": 17},
    ),
]


class VehicleCreate(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"vin": "LHM6X4E2XR1000001", "model_code": "HT-6X4-E"}]},
    )

    vin: Vin
    model_code: Code


class VehicleUpdate(PatchModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"model_code": "HT-6X4-E-LR"}]})

    model_code: Code | None = None


class VehicleRead(BaseModel):
    vin: str
    oem_code: str
    model_code: str
    # Null when the vehicle carries no battery, and for OEM keys when it is another OEM's.
    installed_battery_serial: str | None
    created_at: datetime
    updated_at: datetime
