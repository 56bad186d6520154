"""All tables, imported in one place so Alembic and the app see the same metadata."""
from portal.models.base import Base, utcnow
from portal.models.campaign import Campaign, Enrolment, EnrolmentStatus, Event, Link, VerificationPolicy
from portal.models.clinic import AppointmentType, AppointmentTypeGap, Clinic, Location, Modality, Provider, Slot, localized
from portal.models.history import ClinicalFact, FactKind
from portal.models.messaging import OutboxMessage, OutboxStatus
from portal.models.outcomes import EnrolmentFact, EnrolmentFactChange, EnrolmentFactRefresh
from portal.models.outreach import CampaignVariant, ConsentChange, DeliveryReceipt, InboundMessage
from portal.models.patient import Channel, ChannelConsent, Patient
from portal.models.security import OneTimeCode, WebSession
from portal.models.staff import (AuditEntry, AvailabilityBlock, AvailabilityTemplate, HelpNote, OutreachAttempt, Role,
                                 StaffUser)
from portal.models.visit import (Appointment, AppointmentStatus, FormResponse, HelpKind, HelpRequest, HelpStatus,
                                 RefillRequest, RefillStatus)

__all__ = [
    "CampaignVariant", "ClinicalFact", "ConsentChange", "DeliveryReceipt", "FactKind", "InboundMessage",
    "AuditEntry", "AvailabilityBlock", "AvailabilityTemplate", "HelpNote", "OutreachAttempt", "Role", "StaffUser",
    "Appointment", "AppointmentStatus", "AppointmentType", "AppointmentTypeGap", "Base", "Campaign",
    "Channel", "ChannelConsent", "Clinic", "Enrolment", "EnrolmentFact", "EnrolmentFactChange", "EnrolmentFactRefresh",
    "EnrolmentStatus", "Event", "FormResponse",
    "HelpKind", "HelpRequest", "HelpStatus", "Link", "Location", "Modality", "OneTimeCode",
    "OutboxMessage", "OutboxStatus", "Patient", "Provider", "RefillRequest", "RefillStatus", "Slot", "VerificationPolicy", "WebSession",
    "localized", "utcnow",
]
