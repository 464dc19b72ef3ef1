from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.core.schemas import RequestModel, Text
from app.organizations.schemas import Code, Name, PatchModel

# Numeric(10, 3) in the database: stay well inside it so no value is rejected there.
Nominal = Annotated[float, Field(gt=0, le=1_000_000)]
Chemistry = Annotated[Text, Field(min_length=1, max_length=32)]


def _distinct(codes: list[str]) -> list[str]:
    return list(dict.fromkeys(codes))


PackTypeCodes = Annotated[
    list[Code],
    Field(min_length=1, max_length=50, description="The pack types this model takes"),
    AfterValidator(_distinct),
]


class PackTypeCreate(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "code": "HD-LFP-282",
                    "name": "Heavy-duty LFP 282 kWh",
                    "chemistry": "LFP",
                    "nominal_energy_kwh": 282.0,
                    "nominal_capacity_ah": 560.0,
                    "nominal_voltage_v": 512.0,
                }
            ]
        },
    )

    code: Code
    name: Name
    chemistry: Chemistry
    nominal_energy_kwh: Nominal
    nominal_capacity_ah: Nominal
    nominal_voltage_v: Nominal


class PackTypeUpdate(PatchModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "Heavy-duty LFP 282 kWh (gen 2)"}]}
    )

    name: Name | None = None
    chemistry: Chemistry | None = None
    nominal_energy_kwh: Nominal | None = None
    nominal_capacity_ah: Nominal | None = None
    nominal_voltage_v: Nominal | None = None


class PackTypeRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    code: str
    name: str
    chemistry: str
    nominal_energy_kwh: float
    nominal_capacity_ah: float
    nominal_voltage_v: float
    created_at: datetime


class VehicleModelCreate(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "code": "HT-6X4-E",
                    "name": "Heavy tractor 6x4 electric",
                    "oem_code": "haulmax",
                    "pack_type_codes": ["HD-LFP-282"],
                }
            ]
        },
    )

    code: Code
    name: Name
    oem_code: Code
    pack_type_codes: PackTypeCodes


class VehicleModelUpdate(PatchModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"pack_type_codes": ["HD-LFP-282", "HD-LFP-350"]}]}
    )

    name: Name | None = None
    pack_type_codes: PackTypeCodes | None = None


class VehicleModelRead(BaseModel):
    code: str
    name: str
    oem_code: str
    pack_type_codes: list[str]
    created_at: datetime
