"""``when=`` conditions judged on the net change of a row."""

from __future__ import annotations

import pytest

import signalbus
from signalbus import changed


@pytest.fixture
def plan_user(Session, models):
    with Session() as s:
        u = models.User(email="a@example.com", plan="free")
        s.add(u)
        s.commit()
        return u.id


def _set_plan(Session, models, uid, *plans):
    with Session() as s:
        u = s.get(models.User, uid)
        for plan in plans:
            u.plan = plan
            s.flush()
        s.commit()


def test_changed_to_fires(bus, Session, models, recorder, plan_user):
    signalbus.bind(models.User, "update", "went_pro", when=changed("plan", to="pro"))
    recorder.listen("went_pro")
    _set_plan(Session, models, plan_user, "pro")
    (event,) = recorder.events
    assert event.changes["plan"] == ("free", "pro")


def test_changed_to_does_not_fire_for_another_value(bus, Session, models, recorder, plan_user):
    signalbus.bind(models.User, "update", "went_pro", when=changed("plan", to="pro"))
    recorder.listen("went_pro")
    _set_plan(Session, models, plan_user, "team")
    assert recorder.calls == []


def test_changed_is_judged_on_the_net_change(bus, Session, models, recorder, plan_user):
    signalbus.bind(models.User, "update", "went_pro", when=changed("plan", to="pro"))
    recorder.listen("went_pro")
    _set_plan(Session, models, plan_user, "pro", "team")  # passed through pro
    assert recorder.calls == []


def test_was_and_combinations(bus, Session, models, recorder, plan_user):
    signalbus.bind(models.User, "update", "left_free", when=changed("plan", was="free"))
    signalbus.bind(models.User, "update", "plan_not_name",
                   when=changed("plan") & ~changed("name"))
    signalbus.bind(models.User, "update", "plan_or_name", when=changed("plan") | changed("name"))
    recorder.listen("left_free", "plan_not_name", "plan_or_name")
    _set_plan(Session, models, plan_user, "pro")
    assert recorder.names == ["left_free", "plan_not_name", "plan_or_name"]


def test_on_insert_set_attributes_count_and_was_never_matches(bus, Session, models, recorder):
    signalbus.bind(models.User, "insert", "pro_signup", when=changed("plan", to="pro"))
    signalbus.bind(models.User, "insert", "never", when=changed("plan", was="free"))
    signalbus.bind(models.User, "insert", "named", when=changed("name"))
    recorder.listen("pro_signup", "never", "named")
    with Session() as s:
        s.add(models.User(email="a@example.com", plan="pro"))
        s.add(models.User(email="b@example.com", plan="free"))
        s.commit()
    assert [e.data["email"] for e in recorder.of("pro_signup")] == ["a@example.com"]
    assert recorder.of("never") == []
    assert recorder.of("named") == []  # name stayed None: not set


def test_on_delete_nothing_counts_as_changed(bus, Session, models, recorder, plan_user):
    signalbus.bind(models.User, "delete", "deleted_pro", when=changed("plan"))
    signalbus.bind(models.User, "delete", "deleted")
    recorder.listen("deleted_pro", "deleted")
    with Session() as s:
        s.delete(s.get(models.User, plan_user))
        s.commit()
    assert recorder.names == ["deleted"]


def test_changed_without_fields_means_any(bus, Session, models, recorder, plan_user):
    signalbus.bind(models.User, "update", "anything", when=changed())
    recorder.listen("anything")
    with Session() as s:
        s.get(models.User, plan_user).name = "Ada"
        s.commit()
    assert recorder.names == ["anything"]


def test_condition_repr_and_type_errors():
    cond = changed("plan", to="pro") & ~changed("name")
    assert repr(cond) == "(changed('plan', to='pro') & ~changed('name'))"
    with pytest.raises(TypeError):
        changed(1)  # type: ignore[arg-type]
    with pytest.raises(signalbus.BindingError) as info:
        signalbus.bind("x:Y", "update", "s", when=lambda row: True)  # type: ignore[arg-type]
    assert "when= takes a condition" in str(info.value)
