"""The catalog: every signal of an app, who produces it, what its events carry, who
consumes it.

:func:`build` reads what the app declared — bindings (with their ``when=``, and the
payload fields left after ``fields=``/``exclude=``/redaction, typed from the bound
columns), signals declared with :func:`signalbus.signal` (what ``emit`` sends), the
receivers connected on the app's bus with the plugin that connected each, and the
fields each plugin requires — and returns plain data. :func:`to_markdown` renders it
for a docs site; ``flask signalbus catalog`` prints either.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect as sa_inspect
from sqlalchemy import types as sa_types

from . import signals
from .bindings import Binding, qualified_name, registry

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["build", "json_type", "to_markdown"]

CATALOG_VERSION = 1
"""The version of the catalog's JSON shape; it changes only when a key changes meaning."""


def json_type(column_type: sa_types.TypeEngine[Any]) -> str:
    """How a value of ``column_type`` appears in ``event.data`` (after normalisation)."""
    if isinstance(column_type, sa_types.Enum) and column_type.enum_class is not None:
        return "string (enum value)" if _enum_values_are(column_type, str) else "enum value"
    if isinstance(column_type, sa_types.JSON):
        return "JSON"
    if isinstance(column_type, sa_types.Boolean):
        return "boolean"
    try:
        python = column_type.python_type
    except NotImplementedError:
        return type(column_type).__name__
    if issubclass(python, bool):
        return "boolean"
    if issubclass(python, int):
        return "integer"
    if issubclass(python, float):
        return "number"
    if issubclass(python, decimal.Decimal):
        return "string (decimal)"
    if issubclass(python, uuid.UUID):
        return "string (UUID)"
    if issubclass(python, dt.datetime):
        return "string (ISO 8601 date-time)"
    if issubclass(python, dt.date):
        return "string (ISO 8601 date)"
    if issubclass(python, dt.time):
        return "string (ISO 8601 time)"
    if issubclass(python, dt.timedelta):
        return "number (seconds)"
    if issubclass(python, bytes):
        return "string (base64)"
    if issubclass(python, str):
        return "string"
    if issubclass(python, enum.Enum):
        return "enum value"
    if issubclass(python, dict):
        return "object"
    if issubclass(python, list | tuple):
        return "array"
    return python.__name__


def _enum_values_are(column_type: sa_types.Enum, kind: type) -> bool:
    members = list(column_type.enum_class or ())
    return bool(members) and all(isinstance(m.value, kind) for m in members)


def _payload(binding: Binding, redact: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The fields of ``binding``'s events with their types, in column order."""
    from .capture import plans

    assert binding.cls is not None
    fields = plans.payload(binding, redact)
    mapper = sa_inspect(binding.cls)
    out: dict[str, dict[str, Any]] = {}
    for prop in mapper.column_attrs:  # in column order
        if prop.key not in fields:
            continue
        key = prop.key
        column = prop.columns[0]
        out[key] = {"type": json_type(column.type), "nullable": bool(column.nullable)}
    return out


def _doc(sig: signals.Signal | None) -> str | None:
    # an undocumented signal shows its class's docstring: that is not the signal's doc
    if sig is None or not sig.__doc__ or sig.__doc__ == type(sig).__doc__:
        return None
    return sig.__doc__


def _when(binding: Binding) -> str | None:
    return None if binding.when is None else repr(binding.when)


def build(runtime: Runtime) -> dict[str, Any]:
    """The catalog of ``runtime``'s app as plain, JSON-ready data (see the module doc).

    Bindings given as ``"pkg.module:Class"`` strings are resolved first, so that a
    string that does not resolve raises :class:`~signalbus.BindingError` here too.
    """
    from .capture import sync_bindings

    sync_bindings()
    redact = runtime.redact
    receivers = runtime.receivers()
    requires: dict[str, list[tuple[str, frozenset[str]]]] = {}
    for plugin in runtime.plugins:
        for signal_name, fields in (plugin.requires or {}).items():
            requires.setdefault(signal_name, []).append((plugin.name, frozenset(fields)))
    names = sorted(
        (set(signals.declared()) | {b.signal for b in registry.bindings} | set(receivers))
        - {"*"}
    )
    every = receivers.get("*", [])
    out_signals: list[dict[str, Any]] = []
    for name in names:
        producers: list[dict[str, Any]] = []
        for b in registry.bindings:
            if b.signal != name:
                continue
            assert b.cls is not None
            producers.append({
                "kind": "binding",
                "model": qualified_name(b.cls),
                "op": b.op,
                "when": _when(b),
                "phase": b.phase,
                "declaration": b.describe(),
                "fields": _payload(b, redact),
            })
        sig = signals.signal(name) if signals.is_declared(name) else None
        if sig is not None and not producers:
            producers.append({"kind": "emit", "declaration": f"signalbus.signal({name!r})"})
        consumers = [
            {"receiver": r.name, "plugin": r.plugin, "every_signal": False}
            for r in receivers.get(name, ())
        ] + [{"receiver": r.name, "plugin": r.plugin, "every_signal": True} for r in every]
        requirements = []
        for plugin_name, fields in requires.get(name, ()):
            missing: set[str] = set()
            for p in producers:
                if p["kind"] == "binding" and p["phase"] == "commit":
                    missing |= fields - set(p["fields"])
            requirements.append({"plugin": plugin_name, "fields": sorted(fields),
                                 "missing": sorted(missing), "met": not missing})
        out_signals.append({
            "name": name,
            "doc": _doc(sig),
            "producers": producers,
            "consumers": consumers,
            "requirements": requirements,
        })
    return {
        "catalog_version": CATALOG_VERSION,
        "delivery": runtime.settings.delivery,
        "signals": out_signals,
        "plugins": [
            {"name": p.name, "distribution": p.distribution, "status": p.status}
            for p in runtime.plugins
        ],
    }


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(catalog: Mapping[str, Any]) -> str:
    """The catalog as a Markdown page: one section per signal."""
    lines = ["# Signal catalog", "",
             f"Delivery mode: `{catalog['delivery']}`. Generated by "
             "`flask signalbus catalog`; do not edit by hand.", ""]
    for sig in catalog["signals"]:
        lines += [f"## `{sig['name']}`", ""]
        if sig["doc"]:
            lines += [_cell(sig["doc"]), ""]
        lines += ["**Produced by**", ""]
        if not sig["producers"]:
            lines += ["- nothing declared in this app", ""]
        for p in sig["producers"]:
            if p["kind"] == "emit":
                lines += [f"- `signalbus.emit(...)` (declared with `{p['declaration']}`)"]
                continue
            when = f" when `{p['when']}`" if p["when"] else ""
            phase = " (inside the flush)" if p["phase"] == "flush" else ""
            lines += [f"- {p['op']} of `{p['model']}`{when}{phase}", ""]
            if p["fields"]:
                lines += ["  | field | type |", "  |---|---|"]
                for field, info in p["fields"].items():
                    kind = info["type"] + (" or null" if info["nullable"] else "")
                    lines.append(f"  | `{field}` | {_cell(kind)} |")
        lines += ["", "**Consumed by**", ""]
        if not sig["consumers"]:
            lines.append("- no receiver")
        for c in sig["consumers"]:
            origin = f"plugin `{c['plugin']}`" if c["plugin"] else "the app"
            every = " (every signal)" if c["every_signal"] else ""
            lines.append(f"- `{c['receiver']}` — {origin}{every}")
        if sig["requirements"]:
            lines += ["", "**Requirements**", ""]
            for r in sig["requirements"]:
                state = "met" if r["met"] else f"**missing** {', '.join(r['missing'])}"
                lines.append(f"- plugin `{r['plugin']}` reads "
                             f"{', '.join(f'`{f}`' for f in r['fields'])}: {state}")
        lines.append("")
    if catalog["plugins"]:
        lines += ["## Plugins", "", "| plugin | distribution | status |", "|---|---|---|"]
        for p in catalog["plugins"]:
            lines.append(f"| `{p['name']}` | {_cell(p['distribution'] or '?')} | {p['status']} |")
        lines.append("")
    return "\n".join(lines)
