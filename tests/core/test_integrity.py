"""The one mapping from a database constraint violation to the client's error
(app/core/integrity.py), on real violations: what a service expects by name, its own write
refused, and the rest."""

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.orm import Session

from app.core.errors import AppError
from app.core.integrity import ConstraintViolation, refused_writes
from app.models import Battery, BatteryState, LocationKind, OrgRole
from tests.fixtures.factories import make_org, make_pack_type, unique


def battery(session: Session, **overrides: object) -> Battery:
    values: dict[str, object] = {
        "serial": unique("INT"),
        "pack_type_id": make_pack_type(session).id,
        "owner_id": make_org(session, OrgRole.owner).id,
        "state": BatteryState.in_service,
        "location_kind": LocationKind.warehouse,
        **overrides,
    }
    return Battery(**values)


def refused(session: Session, row: Battery, **mapping: Any) -> AppError:
    nested = session.begin_nested()
    session.add(row)
    with pytest.raises(AppError) as raised, refused_writes(**mapping):
        session.flush()
    nested.rollback()
    return raised.value


Row = Callable[[Session], Battery]
CHECK: Row = lambda session: battery(session, soc_pct=150.0)  # noqa: E731
FOREIGN_KEY: Row = lambda session: battery(session, owner_id=-1)  # noqa: E731


def test_a_constraint_the_service_names_gives_its_error(session: Session) -> None:
    mine = AppError("the service's own words")
    error = refused(session, CHECK(session), expected={"ck_batteries_soc_range": mine})
    assert error is mine


def test_a_check_that_refuses_a_services_own_write_is_a_422_naming_the_constraint(
    session: Session,
) -> None:
    error = refused(session, CHECK(session), own_write=True)
    assert (error.status, error.code) == (422, "Unprocessable")
    assert "ck_batteries_soc_range" in error.detail


def test_a_foreign_key_that_refuses_a_services_own_write_is_a_409_to_retry(
    session: Session,
) -> None:
    error = refused(session, FOREIGN_KEY(session), own_write=True)
    assert (error.status, error.code) == (409, "Conflict")
    assert "changed concurrently" in error.detail


def test_an_unexpected_violation_is_a_409_constraint_violation_with_its_constraint(
    session: Session,
) -> None:
    error = refused(session, CHECK(session), expected={"some_other_constraint": AppError("no")})
    assert isinstance(error, ConstraintViolation)
    assert (error.status, error.code) == (409, "ConstraintViolation")
    assert error.extra == {"constraint": "ck_batteries_soc_range"}
    assert error.detail.endswith("(constraint ck_batteries_soc_range); nothing was stored")
