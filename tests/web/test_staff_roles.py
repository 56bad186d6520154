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

# endpoint -> (method, roles that may use it). Sign-in pages are open to everyone.
EXPECTED = {
    "staff.home": ("GET", EVERYONE),
    "staff.schedule": ("GET", SCHEDULE),
    "staff.patients": ("GET", SCHEDULE),
    "staff.patient": ("GET", SCHEDULE),
    "staff.enrolment": ("GET", SCHEDULE),
    "staff.book_for_patient": ("POST", SCHEDULE),
    "staff.appointment_status": ("POST", SCHEDULE),
    "staff.queue": ("GET", QUEUE),
    "staff.help_request": ("GET", QUEUE),
    "staff.update_help_request": ("POST", QUEUE),
    "staff.log_call": ("POST", QUEUE),
    "staff.unlock": ("POST", QUEUE),
    "staff.campaign_list": ("GET", CAMPAIGNS),
    "staff.new_campaign": ("GET", CAMPAIGNS),
    "staff.campaign": ("GET", CAMPAIGNS),
    "staff.save_variant": ("POST", CAMPAIGNS),
    "staff.campaign_status": ("POST", CAMPAIGNS),
    "staff.users": ("GET", ADMIN),
    "staff.audit_log": ("GET", ADMIN),
}
OPEN = {"staff.login", "staff.second_factor", "staff.logout"}


def staff_endpoints(app) -> dict[str, str]:
    """endpoint -> URL with a made-up id for every path parameter."""
    urls = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("staff.") and rule.endpoint not in OPEN:
            urls[rule.endpoint] = re.sub(r"<(?:int:)?[a-z_]+>", "999999", rule.rule)
    return urls


def test_every_console_endpoint_is_in_the_matrix(app):
    assert set(staff_endpoints(app)) == set(EXPECTED)


def test_every_console_endpoint_sends_strangers_to_sign_in(app, client):
    for endpoint, url in staff_endpoints(app).items():
        method, _roles = EXPECTED[endpoint]
        response = client.get(url) if method == "GET" else client.post(url)
        assert response.status_code in (303, 400), endpoint  # 400: a POST without a CSRF token
        if method == "GET":
            assert "/staff/login" in response.headers["Location"], endpoint


@pytest.mark.parametrize("role", ROLES)
def test_role_matrix(app, db, client, in_app, role):
    browser = sign_in(client, make_staff(db, in_app, role))
    token = re.search(r'name="csrf_token" value="([^"]+)"', browser.page).group(1)
    for endpoint, url in staff_endpoints(app).items():
        method, allowed = EXPECTED[endpoint]
        response = client.get(url) if method == "GET" else client.post(url, data={"csrf_token": token})
        if role in allowed:
            assert response.status_code != 403, f"{role} refused {endpoint}"
            assert response.status_code < 500, f"{endpoint} failed for {role}"
        else:
            assert response.status_code == 403, f"{role} allowed {endpoint} ({response.status_code})"
