"""Which attribute names the default redaction leaves out of payloads: names are compared
folded (lower case, no ``_``, ``-``, ``.`` or spaces), so camelCase and SHOUTING_CASE
secrets are caught like snake_case ones."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import signalbus
from signalbus.capture.plans import redacted
from signalbus.settings import DEFAULTS, Settings

DEFAULT = Settings.from_config(DEFAULTS).redact

NAMES = [
    # (attribute name, redacted by default)
    ("password", True),
    ("password_hash", True),
    ("PASSWORD_HASH", True),
    ("passwordHash", True),
    ("passwd", True),
    ("pwd", True),
    ("secret", True),
    ("secretKey", True),
    ("client-secret", True),
    ("clientSecret", True),
    ("token", True),
    ("accessToken", True),
    ("refresh_token", True),
    ("api_key", True),
    ("apiKey", True),
    ("APIKey", True),
    ("sendGridApiKey", True),
    ("api-key", True),
    ("private_key", True),
    ("privateKey", True),
    ("credentials", True),
    ("awsCredential", True),
    ("email", False),
    ("name", False),
    ("plan", False),
    ("author", False),
    ("keyword", False),
    ("api_version", False),
    ("password_changed_at", True),  # over-redaction is the safe side; fields= restores it
]


@pytest.mark.parametrize(("name", "expected"), NAMES)
def test_default_redaction(name: str, expected: bool) -> None:
    assert redacted(name, DEFAULT) is expected


def test_patterns_of_the_setting_are_folded_too() -> None:
    redact = Settings.from_config({**DEFAULTS, "SIGNALBUS_REDACT": "Social-Security, iban"}
                                  ).redact
    assert redact == ("socialsecurity", "iban")
    assert redacted("socialSecurityNumber", redact)
    assert redacted("IBAN", redact)
    assert not redacted("password", redact)  # the setting replaces the default list


def test_camel_case_secrets_stay_out_of_events(engine: Any, recorder: Any) -> None:
    class Base(DeclarativeBase):
        pass

    class Settings_(Base):
        __tablename__ = "redaction_settings"
        id: Mapped[int] = mapped_column(primary_key=True)
        siteName: Mapped[str] = mapped_column(String(50))  # noqa: N815 - Badgeyay's names
        sendGridApiKey: Mapped[str] = mapped_column(String(50))  # noqa: N815
        secretKey: Mapped[str] = mapped_column(String(50))  # noqa: N815

    Base.metadata.create_all(engine)
    try:
        Session = sessionmaker(engine)
        signalbus.bind(Settings_, "insert", "settings_created")
        signalbus.bind(Settings_, "insert", "settings_exported",
                       fields=["id", "sendGridApiKey"])
        signalbus.SignalBus().attach(Session, plugins=False)
        recorder.listen("settings_created", "settings_exported")
        with Session() as session:
            session.add(Settings_(id=1, siteName="badgeyay", sendGridApiKey="SG.x",
                                  secretKey="k"))
            session.commit()
        created, exported = recorder.events
        assert dict(created.data) == {"id": 1, "siteName": "badgeyay"}
        assert dict(exported.data) == {"id": 1, "sendGridApiKey": "SG.x"}  # fields= names it
    finally:
        Base.metadata.drop_all(engine)
