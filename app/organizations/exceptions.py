from app.core.errors import AppError


class OrganizationNotFound(AppError):
    status = 404
    code = "OrganizationNotFound"
    title = "Organization not found"


class OrganizationExists(AppError):
    status = 409
    code = "OrganizationExists"
    title = "An organization with this code already exists"


class UnknownOrganization(AppError):
    """A request body names an organization that does not exist."""

    status = 422
    code = "UnknownOrganization"
    title = "Referenced organization does not exist"


class OrganizationRoleMismatch(AppError):
    status = 422
    code = "OrganizationRoleMismatch"
    title = "Referenced organization has the wrong role"
