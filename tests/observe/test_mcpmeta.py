"""Which revision a request speaks, what it is about, which header rules it
breaks (observe/mcpmeta.py): the rules of the 2025 and 2026-07-28 transport
texts, with bytes alone."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from mcp_sidecar.observe.jsonrpc import decode, params_facts
from mcp_sidecar.observe.mcpmeta import (
    INVALID,
    KNOWN_VERSIONS,
    Conformance,
    TargetLabels,
    answer_conformance,
    header_text,
    request_conformance,
    request_version,
    target_name,
    version_label,
)


def facts(params: str):
    return params_facts(decode(b'{"jsonrpc":"2.0","id":1,"method":"x","params":%s}' % params.encode())[0])


MODERN_META = '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}'


def test_versions_are_a_bounded_label() -> None:
    assert [version_label(v) for v in KNOWN_VERSIONS] == list(KNOWN_VERSIONS)
    assert version_label(None) == "unknown"
    assert version_label("2027-01-01") == version_label(7) == version_label("x" * 1000) == "other"


def test_a_request_s_version_comes_from_the_header_then_meta_then_its_session_then_initialize() -> None:
    modern = facts("{" + MODERN_META + "}")
    assert request_version("2025-06-18", modern, "2025-03-26", "tools/list") == "2025-06-18"
    assert request_version(None, modern, "2025-03-26", "tools/list") == "2026-07-28"
    assert request_version(None, facts("{}"), "2025-03-26", "tools/list") == "2025-03-26"
    assert request_version(None, facts('{"protocolVersion":"2024-11-05"}'), None, "initialize") == "2024-11-05"
    assert request_version(None, facts('{"protocolVersion":"2024-11-05"}'), None, "tools/list") == "unknown"


@given(st.text(max_size=40))
def test_any_text_survives_the_base64_sentinel(value: str) -> None:
    encoded = "=?base64?" + base64.b64encode(value.encode()).decode() + "?="
    assert header_text(encoded) == value


def test_header_values_that_are_not_valid_are_told_apart() -> None:
    assert header_text("echo") == "echo"
    assert header_text(None) is None
    assert header_text("=?base64?%%%?=") is INVALID
    assert header_text("=?base64?/w==?=") is INVALID  # not UTF-8
    assert header_text("caf\xe9") is INVALID  # (latin-1 bytes in a header: not ASCII)


def test_the_target_is_the_body_s_name_or_uri_and_a_disagreeing_header_is_told() -> None:
    call = facts('{"name":"search","arguments":{}}')
    assert target_name("tools/call", call, None) == ("search", False)
    assert target_name("tools/call", call, "search") == ("search", False)
    assert target_name("tools/call", call, "=?base64?c2VhcmNo?=") == ("search", False)
    assert target_name("tools/call", call, "delete_all") == ("search", True)  # the body is what runs
    assert target_name("prompts/get", facts('{"name":"greet"}'), None) == ("greet", False)
    read = facts('{"uri":"https://x.example/a?token=secret#frag"}')
    assert target_name("resources/read", read, None) == ("https://x.example/a", False)  # no query: secrets
    assert target_name("tools/list", call, "search") == (None, False)
    assert target_name("tools/call", facts("{}"), "fromheader") == ("fromheader", False)


def test_the_2026_header_rules() -> None:
    body = facts('{"name":"echo",' + MODERN_META + "}")
    good = {"method_header": "tools/call", "name_header": "echo", "version_header": "2026-07-28"}
    assert request_conformance("tools/call", body, session_version=None, **good) == []
    cases = {
        Conformance.METHOD_HEADER_MISMATCH: {**good, "method_header": "tools/list"},
        Conformance.NAME_HEADER_MISMATCH: {**good, "name_header": "other"},
        Conformance.VERSION_HEADER_MISMATCH: {**good, "version_header": "2025-11-25"},
        Conformance.METHOD_HEADER_MISSING: {**good, "method_header": None},
        Conformance.NAME_HEADER_MISSING: {**good, "name_header": None},
        Conformance.HEADER_VALUE_INVALID: {**good, "name_header": "=?base64?!!?="},
    }
    for kind, headers in cases.items():
        assert request_conformance("tools/call", body, session_version=None, **headers) == [kind], kind
    # The version header missing, the body's _meta says 2026-07-28: missing.
    assert request_conformance("tools/call", body, session_version=None, **{**good, "version_header": None}) == [
        Conformance.VERSION_HEADER_MISSING
    ]
    # No name in the body (a method without a target): no Mcp-Name expected.
    assert (
        request_conformance(
            "tools/list",
            facts("{" + MODERN_META + "}"),
            session_version=None,
            **{**good, "method_header": "tools/list", "name_header": None},
        )
        == []
    )


def test_the_2025_header_rules() -> None:
    plain = facts("{}")
    none = {"method_header": None, "name_header": None, "version_header": None}
    # 2025-06-18 and later: requests after initialize carry MCP-Protocol-Version.
    assert request_conformance("tools/list", plain, session_version="2025-11-25", **none) == [
        Conformance.VERSION_HEADER_MISSING
    ]
    assert request_conformance("initialize", plain, session_version="2025-11-25", **none) == []
    # 2025-03-26 had no such header; headers a 2025 client need not send are not missing.
    assert request_conformance("tools/list", plain, session_version="2025-03-26", **none) == []
    assert (
        request_conformance(
            "tools/call",
            facts('{"name":"x"}'),
            session_version="2025-11-25",
            **{**none, "version_header": "2025-11-25"},
        )
        == []
    )


def test_a_notification_is_accepted_with_202_or_refused_with_an_error() -> None:
    assert answer_conformance(202, True) is None
    assert answer_conformance(400, True) is None
    assert answer_conformance(200, True) is Conformance.NOTIFICATION_NOT_202
    assert answer_conformance(200, False) is None


def test_target_labels_are_capped_and_counted() -> None:
    labels = TargetLabels(2)
    assert [labels.label(n) for n in ("a", "b", "a", "c", "d", None)] == ["a", "b", "a", "other", "other", ""]
    assert labels.capped == 2
    assert len(TargetLabels(5).label("x" * 500)) == 128  # long names are cut
