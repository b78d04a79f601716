"""The CRM example end to end: flush-phase auto fields, the journal, a muted data load."""

from __future__ import annotations

import json

import pytest

from examples.crm import Contact, create_app, db, init_db
from examples.crm.app import load


@pytest.fixture
def app(fsa_config, tmp_path):
    app = create_app({**fsa_config, "SIGNALBUS_JOURNAL_DIR": str(tmp_path / "journal")})
    init_db(app)
    yield app
    with app.app_context():
        db.drop_all()
        db.engine.dispose()


def _journal(tmp_path):
    lines = []
    for path in sorted((tmp_path / "journal").glob("*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    return lines


def test_auto_fields_and_journal(app, tmp_path, signalbus_capture):
    client = app.test_client()
    created = client.post("/contacts", json={"name": "Ada"},
                          headers={"X-Author": "grace"}).json
    assert created["public_id"].startswith("C-")
    assert created["created_by"] == "grace"
    updated = client.patch(f"/contacts/{created['id']}", json={"email": "ada@example.com"},
                           headers={"X-Author": "linus"}).json
    assert updated["updated_by"] == "linus"
    assert signalbus_capture.names == ["contact_created", "contact_updated"]
    journal = _journal(tmp_path)
    assert [(j["signal"], j["data"]["public_id"]) for j in journal] == [
        ("contact_created", created["public_id"]),
        ("contact_updated", created["public_id"]),
    ]
    assert journal[1]["changes"]["email"] == [None, "ada@example.com"]


def test_loaddata_is_muted_but_gets_auto_fields(app, tmp_path, signalbus_capture):
    fixture = tmp_path / "contacts.json"
    fixture.write_text(json.dumps([{"name": "A"}, {"name": "B"}]))
    result = app.test_cli_runner().invoke(args=["loaddata", str(fixture)])
    assert result.exit_code == 0, result.output
    assert "loaded 2 contacts (signals muted)" in result.output
    with app.app_context():
        contacts = db.session.query(Contact).all()
        assert [c.created_by for c in contacts] == ["system", "system"]
        assert all(c.public_id.startswith("C-") for c in contacts)
        load([{"name": "C"}])
    assert signalbus_capture.events == []
    assert _journal(tmp_path) == []
