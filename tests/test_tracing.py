"""OpenTelemetry tracing with the SDK's in-memory exporter: a receiver run is a span in
the trace of the request that committed the change, inline and through the outbox
worker (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import select

import signalbus.tracing
from signalbus.outbox import outbox
from signalbus.outbox.worker import drain
from tests import webhost
from tests.webhost import FAIL, join

pytestmark = pytest.mark.signalbus_receiver_errors("log")


@pytest.fixture
def spans() -> Iterator[tuple[InMemorySpanExporter, Any]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    signalbus.tracing.enable(tracer_provider=provider)
    try:
        yield exporter, provider.get_tracer("tests")
    finally:
        signalbus.tracing.disable()
        provider.shutdown()


@pytest.mark.parametrize("mode", ["inline", "outbox"])
def test_a_receiver_run_is_a_span_in_the_committing_requests_trace(
        database_url: str, spans: tuple[InMemorySpanExporter, Any], mode: str) -> None:
    exporter, tracer = spans
    with webhost.host(database_url, SIGNALBUS_DELIVERY=mode) as app:
        FAIL.add("b@example.com")
        with tracer.start_as_current_span("POST /register") as request:
            join(app, "b@example.com")
        if mode == "outbox":
            with app.app_context(), webhost.db.engine.connect() as conn:
                (payload,) = conn.execute(select(outbox.c.payload)).scalars()
            ctx = request.get_span_context()
            assert payload["trace"]["traceparent"].startswith(
                f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-")
            drain(app)
    found = {s.attributes["signalbus.receiver"]: s for s in exporter.get_finished_spans()
             if s.name == "signalbus deliver web_member_joined"}
    assert set(found) == {"tests.webhost:welcome", "tests.webhost:notify_slack"}
    request_ctx = request.get_span_context()
    for span in found.values():
        assert span.kind == SpanKind.CONSUMER
        assert span.context.trace_id == request_ctx.trace_id
        assert span.parent is not None and span.parent.span_id == request_ctx.span_id
        assert span.attributes["messaging.system"] == "signalbus"
        assert span.attributes["signalbus.attempt"] == 1
        if mode == "outbox":
            assert [link.context.span_id for link in span.links] == [request_ctx.span_id]
    welcome, slack = found["tests.webhost:welcome"], found["tests.webhost:notify_slack"]
    assert welcome.status.status_code == StatusCode.UNSET
    assert welcome.attributes["signalbus.outcome"] == "ok"
    assert slack.status.status_code == StatusCode.ERROR
    assert slack.status.description == ("RuntimeError: posting to https://hooks.example/… "
                                        "failed with Authorization: Bearer …")
    assert slack.events == ()  # the exception (with its secrets) is not recorded


def test_an_event_stored_without_a_trace_gets_a_trace_of_its_own(
        database_url: str, spans: tuple[InMemorySpanExporter, Any]) -> None:
    exporter, tracer = spans
    with webhost.host(database_url) as app:
        join(app, "a@example.com")
        with tracer.start_as_current_span("the worker's own work"):
            drain(app)
    (span, *_) = [s for s in exporter.get_finished_spans() if s.name.startswith("signalbus")]
    assert span.parent is None and span.links == ()
