"""A patient's browser for the Flask test client: follows the forms' CSRF tokens
the way a real browser posts them."""
from __future__ import annotations

import re
from datetime import date

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class PatientBrowser:
    def __init__(self, client) -> None:
        self.client = client
        self.page = ""
        self.status = 0

    def _record(self, response):
        self.status = response.status_code
        self.page = response.get_data(as_text=True)
        return response

    def get(self, path: str, **kwargs):
        return self._record(self.client.get(path, follow_redirects=True, **kwargs))

    def post(self, path: str, data: dict | None = None, follow: bool = True, **kwargs):
        found = CSRF.search(self.page)
        data = {"csrf_token": found.group(1) if found else "", **(data or {})}
        return self._record(self.client.post(path, data=data, follow_redirects=follow, **kwargs))

    def switch_language(self, lang: str, next_path: str):
        return self.post("/language", {"lang": lang, "next": next_path})

    def verify(self, db, invited, code_reader, birth_date: date | None = None, channel: str = "sms"):
        """Open the link, ask for a code, and type birth date and code."""
        self.get(invited.path)
        self.post("/welcome/code", {"channel": channel})
        birth = birth_date or invited.patient.birth_date
        return self.post("/welcome/verify", {"birth_month": str(birth.month), "birth_day": str(birth.day),
                                             "birth_year": str(birth.year), "code": code_reader(db, invited.patient)})

    def slot_ids(self, field: str = "slot") -> list[int]:
        """The times offered on the page (field "second" on the follow-up page)."""
        return [int(v) for v in re.findall(rf'name="{field}" value="(\d+)"', self.page)]

    def type_ids(self) -> list[int]:
        return [int(v) for v in re.findall(r'name="appointment_type" value="(\d+)"', self.page)]
