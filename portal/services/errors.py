"""Domain errors. Services raise these; the web layer maps each to a translated
message and a 4xx status, so no rule ever turns into a 500."""


class PortalError(Exception):
    """Base class for every expected failure a user can cause."""


class LinkInvalid(PortalError):
    """The token is unknown, tampered with or for another purpose."""


class LinkExpired(PortalError):
    """The link was real but its lifetime has passed."""


class LinkRevoked(PortalError):
    """The link was revoked (opt-out, superseded, or by staff)."""


class SessionEnded(PortalError):
    """The patient's session timed out or never existed."""


class EnrolmentLocked(PortalError):
    """Too many wrong birth dates: the link is locked and staff have been told."""


class VerificationFailed(PortalError):
    """The details did not match. Deliberately says nothing about which part."""


class CodeExpired(PortalError):
    """There is no usable code: expired, used, too many tries, or never sent."""


class CodeSendLimited(PortalError):
    """Too many codes sent recently to this patient."""


class NoContactOnFile(PortalError):
    """The chosen channel has no phone or email on file to send a code to."""


class SlotTaken(PortalError):
    """Someone else got the time first (or it was blocked)."""


class NotAvailable(PortalError):
    """The requested choice is not offered to this enrolment (wrong type, past, unknown)."""


class NoLiveAppointment(PortalError):
    """There is no booked appointment to act on."""


class InvalidInput(PortalError):
    """A value failed a rule the form layer could not check."""


class SignInFailed(PortalError):
    """Email, password or authenticator code wrong. Says nothing about which."""


class AccountLocked(PortalError):
    """Too many failed sign-ins; the account waits before it accepts another try."""


class NotPermitted(PortalError):
    """The staff member's role does not allow this."""


class AuditIsAppendOnly(PortalError):
    """Something tried to change or delete an audit entry."""


class MessageRejected(InvalidInput):
    """Staff wording failed the message linter; `problems` says why, per language."""

    def __init__(self, problems: list) -> None:
        super().__init__()
        self.problems = problems
