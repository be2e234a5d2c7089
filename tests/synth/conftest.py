"""Fixtures for synthesis tests: the fake teacher server and the test API key."""

from __future__ import annotations

import pytest
from fake_teacher import FakeTeacher
from synth_helpers import API_KEY


@pytest.fixture
def fake_teacher():
    """A misbehaving teacher (every first attempt fails) that wants the test API key."""
    with FakeTeacher(faults=True, expected_key=API_KEY) as server:
        yield server


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("L2RAY_TEACHER_API_KEY", API_KEY)
    return API_KEY
