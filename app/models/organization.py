from datetime import datetime

from sqlalchemy import CheckConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.models.base import created_at_column, id_column, pg_enum
from app.models.enums import OrgRole


class Organization(Base):
    __tablename__ = "organizations"
    __table_args__ = (CheckConstraint("code ~ '^[A-Za-z0-9][A-Za-z0-9_.-]*$'", name="code_format"),)

    id: Mapped[int] = id_column()
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[OrgRole] = mapped_column(pg_enum(OrgRole, "org_role"))
    created_at: Mapped[datetime] = created_at_column()
