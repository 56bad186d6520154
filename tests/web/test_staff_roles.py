"""The role matrix: every console endpoint, every role, allowed or refused as designed."""
from __future__ import annotations

import re

import pytest

from tests.staff_helpers import make_staff, sign_in

ROLES = ("admin", "scheduler", "coordinator", "campaign_manager")
EVERYONE = set(ROLES)
SCHEDULE = {"admin", "scheduler", "coordinator"}
SCHEDULING = {"admin", "scheduler"}
QUEUE = {"admin", "coordinator"}
CAMPAIGNS = {"admin", "campaign_manager"}
ADMIN = {"admin"}

# endpoint -> roles that may use it. Sign-in pages are open to everyone.
EXPECTED = {
    "staff.home": EVERYONE,
    "staff.schedule": SCHEDULE,
    "staff.patients": SCHEDULE,
    "staff.patient": SCHEDULE,
    "staff.enrolment": SCHEDULE,
    "staff.book_for_patient": SCHEDULE,
    "staff.appointment_status": SCHEDULE,
    "staff.queue": QUEUE,
    "staff.help_request": QUEUE,
    "staff.update_help_request": QUEUE,
    "staff.log_call": QUEUE,
    "staff.unlock": QUEUE,
    "staff.update_refill": QUEUE,
    "staff.dead_letter_list": QUEUE,
    "staff.requeue": QUEUE,
    "staff.campaign_list": CAMPAIGNS,
    "staff.new_campaign": CAMPAIGNS,
    "staff.campaign": CAMPAIGNS,
    "staff.save_variant": CAMPAIGNS,
    "staff.save_welcome": CAMPAIGNS,
    "staff.campaign_status": CAMPAIGNS,
    "staff.dashboard": CAMPAIGNS,
    "staff.dashboard_csv": CAMPAIGNS,
    "staff.campaign_dashboard": CAMPAIGNS,
    "staff.campaign_dashboard_csv": CAMPAIGNS,
    "staff.dashboard_patients": QUEUE,
    "staff.activate_template": SCHEDULING,
    "staff.appointment_types": SCHEDULING,
    "staff.availability": SCHEDULING,
    "staff.availability_template": SCHEDULING,
    "staff.block_days": SCHEDULING,
    "staff.block_time": SCHEDULING,
    "staff.blocks": SCHEDULING,
    "staff.copy_week": SCHEDULING,
    "staff.deactivate_template": SCHEDULING,
    "staff.edit_appointment_type": SCHEDULING,
    "staff.edit_location": SCHEDULING,
    "staff.edit_provider": SCHEDULING,
    "staff.edit_template": SCHEDULING,
    "staff.generate_slots": SCHEDULING,
    "staff.locations": SCHEDULING,
    "staff.monthly_templates": SCHEDULING,
    "staff.new_appointment_type": SCHEDULING,
    "staff.new_location": SCHEDULING,
    "staff.new_provider": SCHEDULING,
    "staff.new_template": SCHEDULING,
    "staff.providers": SCHEDULING,
    "staff.remove_block": SCHEDULING,
    "staff.restore_appointment_type": SCHEDULING,
    "staff.restore_location": SCHEDULING,
    "staff.restore_provider": SCHEDULING,
    "staff.retire_appointment_type": SCHEDULING,
    "staff.retire_location": SCHEDULING,
    "staff.retire_provider": SCHEDULING,
    "staff.setup": SCHEDULING,
    "staff.users": ADMIN,
    "staff.audit_log": ADMIN,
}
OPEN = {"staff.login", "staff.second_factor", "staff.logout"}


def staff_endpoints(app) -> dict[str, tuple[str, str]]:
    """endpoint -> (method, URL with a made-up id for every path parameter); GET when offered."""
    urls = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("staff.") and rule.endpoint not in OPEN:
            method = "GET" if "GET" in rule.methods else "POST"
            urls[rule.endpoint] = (method, re.sub(r"<(?:int:)?[a-z_]+>", "999999", rule.rule))
    return urls


def test_every_console_endpoint_is_in_the_matrix(app):
    assert set(staff_endpoints(app)) == set(EXPECTED)


def test_every_console_endpoint_sends_strangers_to_sign_in(app, client):
    for endpoint, (method, url) in staff_endpoints(app).items():
        response = client.get(url) if method == "GET" else client.post(url)
        assert response.status_code in (303, 400), endpoint  # 400: a POST without a CSRF token
        if method == "GET":
            assert "/staff/login" in response.headers["Location"], endpoint


@pytest.mark.parametrize("role", ROLES)
def test_role_matrix(app, db, client, in_app, role):
    browser = sign_in(client, make_staff(db, in_app, role))
    token = re.search(r'name="csrf_token" value="([^"]+)"', browser.page).group(1)
    for endpoint, (method, url) in staff_endpoints(app).items():
        allowed = EXPECTED[endpoint]
        response = client.get(url) if method == "GET" else client.post(url, data={"csrf_token": token})
        if role in allowed:
            assert response.status_code != 403, f"{role} refused {endpoint}"
            assert response.status_code < 500, f"{endpoint} failed for {role}"
        else:
            assert response.status_code == 403, f"{role} allowed {endpoint} ({response.status_code})"
