"""Header-injection checks for every value that ends up in a mail header.

Flask-Mail refuses line breaks only in the subject, the sender, the recipients and
Reply-To, and only CR/LF. Here every header value (subject, addresses, display names,
extra headers, the sender) is checked for any line break a mail parser or the
``email`` package could honour (CR, LF, VT, FF, NEL, U+2028/U+2029, the file/group/
record separators) and for other control characters. An address must be one plain
``local@domain`` address: a comma, angle bracket or space in it would smuggle in more
recipients. A bad value raises :class:`signalbus.Permanent` naming the field; the
caller has not sent anything at that point.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from signalbus import Permanent

__all__ = ["Address", "check_address", "check_header", "check_header_name", "parse_address"]

Address = tuple[str, str]
"""``(display name, address)``; the name may be empty."""

# Tab is allowed (it is folding whitespace); everything else below 0x20, DEL, and the
# Unicode line separators str.splitlines() and some MUAs honour are not.
_BAD_CHARS = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
# One address, nothing that could start a second one or a comment.
_ADDRESS = re.compile(r"[^\s@<>,;:\"()\[\]\\]+@[^\s@<>,;:\"()\[\]\\]+")
_NAMED = re.compile(r"\s*(?P<name>[^<>]*?)\s*<(?P<addr>[^<>]*)>\s*")
# RFC 5322 field names: printable ASCII except the colon.
_HEADER_NAME = re.compile(r"[!-9;-~]+")

RESERVED_HEADERS = frozenset({
    "bcc", "cc", "content-transfer-encoding", "content-type", "date", "from",
    "message-id", "mime-version", "reply-to", "sender", "subject", "to",
})
"""Headers a rule may not set through ``headers=``: the plugin sets them itself."""


def check_header(field: str, value: str, *, where: str) -> str:
    """Return ``value`` if it is safe in a header; raise :class:`Permanent` otherwise.

    ``field`` names the header or value for the message, ``where`` says which rule
    and event it belongs to.
    """
    if not isinstance(value, str):
        raise Permanent(f"{where}: {field} must be text, not {type(value).__name__}; no mail sent")
    if _BAD_CHARS.search(value):
        raise Permanent(
            f"{where}: {field} contains a line break or control character (header "
            "injection refused); no mail sent"
        )
    return value


def check_header_name(name: str, *, where: str) -> str:
    """Return an extra header's name if it is a valid field name the rule may set."""
    if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
        raise Permanent(
            f"{where}: extra header name {name!r} is not a valid header field name "
            "(printable ASCII without ':' or spaces); no mail sent"
        )
    if name.lower() in RESERVED_HEADERS:
        raise Permanent(
            f"{where}: extra header {name!r} is set by signalbus-mail itself and cannot be "
            "overridden through headers=; no mail sent"
        )
    return name


def check_address(field: str, address: str, *, where: str) -> str:
    """Return ``address`` if it is exactly one plain ``local@domain`` address."""
    check_header(field, address, where=where)
    if not _ADDRESS.fullmatch(address):
        raise Permanent(
            f"{where}: {field} is not a single email address (expected local@domain, "
            "without spaces, commas or angle brackets); no mail sent"
        )
    return address


def parse_address(field: str, value: str | Sequence[str], *, where: str) -> Address:
    """Turn ``"a@b"``, ``"Name <a@b>"`` or ``("Name", "a@b")`` into a checked pair."""
    if isinstance(value, str):
        check_header(field, value, where=where)
        named = _NAMED.fullmatch(value)
        if named is None:
            return ("", check_address(field, value.strip(), where=where))
        name, address = named.group("name"), named.group("addr")
        if len(name) >= 2 and name[0] == name[-1] == '"':
            name = name[1:-1]
        return (name, check_address(field, address, where=where))
    if (isinstance(value, Sequence) and len(value) == 2
            and all(isinstance(v, str) for v in value)):
        name = check_header(f"display name of {field}", value[0], where=where)
        return (name, check_address(field, value[1], where=where))
    raise Permanent(
        f"{where}: {field} must be an address string or a (name, address) pair, not "
        f"{type(value).__name__}; no mail sent"
    )
