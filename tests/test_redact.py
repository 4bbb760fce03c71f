"""The redactor: known secrets, pieces of them cut by truncation, URL credentials, inside any value."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.events import (
    AssistantMessage,
    StreamFinished,
    StreamWarning,
    SystemNotice,
    TextBlock,
    TextDelta,
)
from orchestrator.redact import (
    FRAGMENT,
    REDACTED,
    Redactor,
    _rewrite,
    batch_redactor,
    environment_secrets,
    known,
    looks_secret,
    url_credentials,
)

KEY = "sk-ant-api03-SENTINEL-0123456789abcdefghij"


def test_a_known_secret_is_replaced_wherever_it_is() -> None:
    redactor = Redactor([KEY])
    assert redactor.text(f"bad key {KEY}!") == f"bad key {REDACTED}!"
    assert redactor.text(f"{KEY}{KEY}") == REDACTED + REDACTED


def test_the_start_or_end_of_a_secret_cut_by_truncation_is_replaced() -> None:
    redactor = Redactor([KEY])
    assert redactor.text("message: " + KEY[:FRAGMENT]) == f"message: {REDACTED}"
    assert redactor.text("message: " + KEY[:30] + "'") == f"message: {REDACTED}'"
    assert redactor.text(KEY[-FRAGMENT:] + " was the tail") == f"{REDACTED} was the tail"


def test_short_values_are_not_secrets() -> None:
    assert Redactor(["1", "true"]).text("1 is true") == "1 is true"


def test_url_credentials_are_replaced_without_knowing_them() -> None:
    redactor = Redactor()
    assert redactor.text("via https://bob:hunter2@proxy:3128/x") == f"via https://{REDACTED}@proxy:3128/x"
    assert redactor.text("https://ghp_token@github.com/a") == f"https://{REDACTED}@github.com/a"
    assert redactor.text("mail bob@example.com") == "mail bob@example.com"


def test_every_string_inside_an_event_is_redacted_and_others_are_kept() -> None:
    redactor = Redactor([KEY])
    notice = SystemNotice("status", {"error": [f"key {KEY}"], KEY: 1})
    assert redactor.value(notice) == SystemNotice("status", {"error": [f"key {REDACTED}"], REDACTED: 1})
    message = AssistantMessage((TextBlock(f"I saw {KEY}"),))
    assert redactor.value(message) == AssistantMessage((TextBlock(f"I saw {REDACTED}"),))
    clean = TextDelta("nothing to hide")
    assert redactor.value(clean) is clean


def test_names_that_look_secret() -> None:
    for name in ("ANTHROPIC_API_KEY", "GH_TOKEN", "ANTHROPIC_CUSTOM_HEADERS", "DB_PASSWORD", "HTTP_AUTH"):
        assert looks_secret(name), name
    for name in ("PATH", "HOME", "PWD", "CLAUDE_CODE_MAX_RETRIES", "KEYBOARD_LAYOUT"):
        assert not looks_secret(name), name


def test_environment_secrets_include_header_values_and_url_credentials() -> None:
    env = {
        "ANTHROPIC_CUSTOM_HEADERS": "x-team: a\nAuthorization: Bearer tok-0123456789",
        "HTTPS_PROXY": "http://user:pw-0123456789@proxy:8080",
        "PATH": "/usr/bin",
    }
    found = environment_secrets(env)
    assert "tok-0123456789" in found and "pw-0123456789" in found and "/usr/bin" not in found
    assert url_credentials("http://user:pw-0123456789@proxy:8080") == ["user:pw-0123456789", "pw-0123456789"]


def test_a_batch_redactor_knows_its_backends_keys_and_diagnostics_learn_them() -> None:
    class Kind:
        def secrets(self, settings: object) -> list[str]:
            return ["kind-secret-0123456789"]

    redactor = batch_redactor({"x": (Kind(), StreamWarning("https://u:settings-pw-0123@h/"))})
    assert redactor.text("kind-secret-0123456789 settings-pw-0123") == f"{REDACTED} {REDACTED}"
    assert known().text("later kind-secret-0123456789") == f"later {REDACTED}"


@given(
    before=st.text(max_size=40),
    after=st.text(max_size=40),
    start=st.integers(0, len(KEY)),
    end=st.integers(0, len(KEY)),
)
def test_no_piece_of_a_key_at_either_end_survives(before: str, after: str, start: int, end: int) -> None:
    """A key cut anywhere by truncation (its head kept, or its tail) does not survive once the
    piece is FRAGMENT characters or more."""
    redactor = Redactor([KEY])
    cut = KEY[:end] if start == 0 else KEY[start:]
    shown = redactor.text(before + cut + after)
    assert KEY not in shown
    if len(cut) >= FRAGMENT:
        assert cut not in shown
    assert redactor.text(shown) == shown


_TEXTS = st.sampled_from(["", "plain", f"key {KEY}", "https://bob:pw@proxy/x", KEY[:FRAGMENT]])


@given(
    stop=st.none() | _TEXTS,
    session=st.none() | _TEXTS,
    result=st.none() | _TEXTS,
    denials=st.lists(st.dictionaries(_TEXTS, _TEXTS, max_size=2), max_size=2),
)
def test_an_event_is_rebuilt_exactly_when_one_of_its_strings_holds_a_secret(
    stop: str | None, session: str | None, result: str | None, denials: list[dict[str, str]]
) -> None:
    # value() first asks whether any field needs hiding and returns the event itself if not:
    # it must agree with the field-by-field rewrite in every case.
    redactor = Redactor([KEY])
    event = StreamFinished(
        stop_reason=stop, session_id=session, result_text=result, permission_denials=tuple(denials)
    )
    strings = [s for s in (stop, session, result) if s is not None]
    strings += [s for denial in denials for pair in denial.items() for s in pair]
    hidden = redactor.value(event)
    assert hidden == _rewrite(event, redactor.text)
    assert (hidden is event) == all(redactor.text(s) == s for s in strings)
    assert KEY[:FRAGMENT] not in repr(hidden) and "bob:pw" not in repr(hidden)


_SHORT_SECRET = "12345678"  # MIN_SECRET characters: the shortest value treated as a secret


@given(
    text=st.text(alphabet="a:/@b 1234x5678", max_size=12)
    | st.sampled_from(["a://b@", "x a://b@", _SHORT_SECRET]),
    secrets=st.sampled_from([(), (_SHORT_SECRET,), (KEY,)]),
)
def test_value_skips_only_strings_that_cannot_hold_a_secret(text: str, secrets: tuple[str, ...]) -> None:
    # value() passes short strings, and with no secret known strings without an @, unread: it
    # must agree with text() on every string, the shortest URL credential and secret included.
    redactor = Redactor(secrets)
    assert redactor.value(TextDelta(text)) == TextDelta(redactor.text(text))
    assert redactor.value(TextDelta("a://b@")) == TextDelta(f"a://{REDACTED}@")
