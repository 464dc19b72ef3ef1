from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.core.db import Base
from app.models.base import created_at_column, id_column, pg_enum
from app.models.enums import KeyRole
from app.models.organization import Organization


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint(
            "(role = 'admin') OR (organization_id IS NOT NULL)", name="scoped_roles_have_org"
        ),
    )

    id: Mapped[int] = id_column()
    # sha256 of the whole key: keys are 256-bit random, so a slow hash would add nothing.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[KeyRole] = mapped_column(pg_enum(KeyRole, "key_role"))
    organization_id: Mapped[int | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    created_at: Mapped[datetime] = created_at_column()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    organization: Mapped[Organization | None] = relationship(lazy="raise")
