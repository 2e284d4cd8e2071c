"""What the flows share: the stack's addresses and people, signing in, submitting a job from
the form, and screenshots."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

JOB_URL = re.compile(r"/jobs/[0-9a-f]{32}$")
PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class Person:
    email: str
    user_id: str
    token: str
    password: str = PASSWORD


@dataclass
class Stack:
    """Where the running apps answer, and the people made for the flows."""

    studio: str
    api: str
    redis_url: str
    people: dict[str, Person]
    env: dict[str, str]  # what the stack's processes were started with, for a test's own


def sign_in(page: Page, person: Person) -> None:
    page.goto("/signin")
    page.get_by_test_id("signin-email").fill(person.email)
    page.get_by_test_id("signin-password").fill(person.password)
    page.get_by_test_id("signin-submit").click()
    expect(page.get_by_test_id("signed-in-as")).to_have_text(person.email)


def submit_job(page: Page, payload: dict[str, Any], **fields: str) -> str:
    """Fill the submit form and send it; returns the new job's id (its page is open)."""
    page.goto("/jobs/new")
    page.get_by_test_id("field-payload").fill(json.dumps(payload, indent=2))
    for name, value in fields.items():
        page.get_by_test_id(f"field-{name}").fill(value)
    page.get_by_test_id("submit-job").click()
    page.wait_for_url(JOB_URL)
    return page.url.rsplit("/", 1)[1]


def shot(page: Page, folder: Path, name: str) -> None:
    """A full-page screenshot, taken from the top so the sticky header sits where it belongs."""
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
