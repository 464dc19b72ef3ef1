from app.core.errors import Forbidden, Unprocessable


class ReportsForbidden(Forbidden):
    code = "ReportsForbidden"
    title = "This key may not read these reports"


class UnknownOem(Unprocessable):
    code = "UnknownOem"
    title = "No OEM organization has this code"


class UnknownPackType(Unprocessable):
    code = "UnknownPackType"
    title = "No pack type has this code"


class InvalidWindow(Unprocessable):
    code = "InvalidWindow"
    title = "The report window is not a valid range of days"
