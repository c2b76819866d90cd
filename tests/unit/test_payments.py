"""Money in, the pure parts: webhook signatures, payment events and redeem-code strings."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forge.domain.errors import (
    InvalidJson,
    InvalidRequest,
    WebhookSignatureInvalid,
    WebhooksNotConfigured,
)
from forge.domain.money import Bucket
from forge.domain.money_in import CodeStatus, RedeemCode
from forge.money_in.codes import CODE_ALPHABET, new_code, normalize_code
from forge.money_in.webhooks import PAYMENT_SUCCEEDED, parse_event, sign_payload, verify_signature

SECRET = "whsec_unit"
NOW = 1_900_000_000
BODY = b'{"id": "evt_1", "type": "payment.succeeded"}'


def clock() -> float:
    return float(NOW)


def verify(header: str | None, body: bytes = BODY, **kwargs: Any) -> int:
    return verify_signature(SECRET, body, header, clock=clock, **kwargs)


def reason_of(header: str | None, body: bytes = BODY, **kwargs: Any) -> str:
    with pytest.raises(WebhookSignatureInvalid) as raised:
        verify(header, body, **kwargs)
    assert raised.value.status == 400 and raised.value.code == "invalid_signature"
    return str(raised.value.details["reason"])


def hex_hmac(secret: str, t: int, body: bytes) -> str:
    """Independent of the code under test: the documented recipe, HMAC-SHA256(t.body)."""
    return hmac.new(secret.encode(), str(t).encode() + b"." + body, hashlib.sha256).hexdigest()


# Signatures -----------------------------------------------------------------------------------
def test_a_good_signature_verifies_and_returns_its_timestamp() -> None:
    header = f"t={NOW},v1={hex_hmac(SECRET, NOW, BODY)}"
    assert sign_payload(SECRET, BODY, NOW) == header
    assert verify(header) == NOW


def test_a_signature_made_with_another_secret_is_refused() -> None:
    assert reason_of(f"t={NOW},v1={hex_hmac('whsec_other', NOW, BODY)}") == "mismatch"


def test_a_tampered_body_is_refused() -> None:
    header = sign_payload(SECRET, BODY, NOW)
    tampered = BODY.replace(b"evt_1", b"evt_2")
    assert reason_of(header, tampered) == "mismatch"
    assert reason_of(header, BODY + b" ") == "mismatch"  # even whitespace: the raw bytes count


def test_the_timestamp_is_part_of_what_is_signed() -> None:
    signature = hex_hmac(SECRET, NOW, BODY)
    assert reason_of(f"t={NOW - 1},v1={signature}") == "mismatch"


@pytest.mark.parametrize(
    ("age", "reason"),
    [(301, "timestamp_too_old"), (3600, "timestamp_too_old"), (-301, "timestamp_in_future")],
)
def test_timestamps_outside_the_window_are_refused_even_when_correctly_signed(
    age: int, reason: str
) -> None:
    t = NOW - age
    assert reason_of(sign_payload(SECRET, BODY, t)) == reason


@pytest.mark.parametrize("age", [300, 0, -300, 120])
def test_timestamps_inside_the_window_pass(age: int) -> None:
    assert verify(sign_payload(SECRET, BODY, NOW - age)) == NOW - age


def test_the_tolerance_is_configurable() -> None:
    header = sign_payload(SECRET, BODY, NOW - 30)
    assert reason_of(header, tolerance_seconds=10) == "timestamp_too_old"
    assert verify(header, tolerance_seconds=60) == NOW - 30


def test_any_of_several_v1_signatures_may_match_during_secret_rotation() -> None:
    old, new = hex_hmac("whsec_old", NOW, BODY), hex_hmac(SECRET, NOW, BODY)
    assert verify(f"t={NOW},v1={old},v1={new}") == NOW
    assert verify(f"t={NOW}, v1={new}, v1={old}") == NOW
    assert verify(f"t={NOW},v0=whatever,v1={new.upper()}") == NOW  # other schemes are ignored
    assert reason_of(f"t={NOW},v1={old},v1={hex_hmac('whsec_x', NOW, BODY)}") == "mismatch"


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        f"v1={'0' * 64}",  # no timestamp
        f"t={NOW}",  # no signature
        f"t=,v1={'0' * 64}",
        f"t=-5,v1={'0' * 64}",
        f"t=1e9,v1={'0' * 64}",
        f"t={NOW},t={NOW},v1={'0' * 64}",  # two timestamps
        f"t={NOW},v1=xyz",
        f"t={NOW},v1={'0' * 63}",
        f"t={NOW},v1={'g' * 64}",
        f"t={NOW};v1={'0' * 64}",
        f"t={NOW}," + ",".join(f"v1={'0' * 64}" for _ in range(9)),  # too many
        f"t={NOW},v1={'0' * 64}," + "x" * 3000,
    ],
)
def test_malformed_headers_are_refused(header: str) -> None:
    assert reason_of(header) in {"malformed", "missing_header"}


def test_a_missing_header_is_refused() -> None:
    assert reason_of(None) == "missing_header"


def test_without_a_secret_nothing_verifies() -> None:
    for secret in (None, ""):
        with pytest.raises(WebhooksNotConfigured) as raised:
            verify_signature(secret, BODY, sign_payload("", BODY, NOW), clock=clock)
        assert raised.value.status == 503


@given(st.binary(max_size=512), st.integers(min_value=0, max_value=10**10))
def test_sign_then_verify_round_trips_for_any_body(body: bytes, t: int) -> None:
    header = sign_payload(SECRET, body, t)
    assert verify_signature(SECRET, body, header, clock=lambda: float(t)) == t
    with pytest.raises(WebhookSignatureInvalid):
        verify_signature(SECRET, body + b"x", header, clock=lambda: float(t))


# Payment events -------------------------------------------------------------------------------
def event(**changes: Any) -> dict[str, Any]:
    data = {"account_id": "acct_1", "bucket": "credit", "amount": "12.50", "payment_id": "pi_9"}
    base: dict[str, Any] = {
        "id": "evt_1",
        "type": PAYMENT_SUCCEEDED,
        "created": NOW,
        "data": {**data, **changes.pop("data", {})},
    }
    return {**base, **changes}


def test_a_payment_event_parses_to_exact_money() -> None:
    parsed = parse_event(json.dumps(event()).encode())
    payment = parsed.payment()
    assert (parsed.id, parsed.type, parsed.created) == ("evt_1", PAYMENT_SUCCEEDED, NOW)
    assert payment.account_id == "acct_1" and payment.payment_id == "pi_9"
    assert payment.money.micros == 12_500_000 and payment.money.bucket is Bucket.CREDIT


def test_other_event_types_parse_without_interpreting_their_data() -> None:
    parsed = parse_event(json.dumps(event(type="payment.refunded", data={"amount": 5})).encode())
    assert parsed.type == "payment.refunded"


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ({"amount": "0"}, "data.amount"),
        ({"amount": "-1.00"}, "data.amount"),
        ({"amount": "0.0000001"}, "data.amount"),  # sub-micro precision
        ({"amount": "1e3"}, "data.amount"),
        ({"amount": "NaN"}, "data.amount"),
        ({"amount": 12.5}, "data.amount"),  # a JSON number is a float: refused
        ({"amount": "twelve"}, "data.amount"),
        ({"bucket": "usd"}, "data.bucket"),
        ({"account_id": ""}, "data.account_id"),
        ({"account_id": "ACCT#x"}, "data.account_id"),
        ({"payment_id": None}, "data.payment_id"),
    ],
)
def test_a_payment_event_with_bad_money_is_a_400_naming_the_field(
    data: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_event(json.dumps(event(data=data)).encode())
    assert raised.value.status == 400 and raised.value.param == param


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"{not json", InvalidJson),
        (b"\xff\xfe", InvalidJson),
        (b"[1, 2]", InvalidRequest),
        (json.dumps({"type": PAYMENT_SUCCEEDED, "created": 1}).encode(), InvalidRequest),
        (json.dumps(event(id="evt#1")).encode(), InvalidRequest),
        (json.dumps(event(created=-1)).encode(), InvalidRequest),
    ],
)
def test_malformed_events_are_client_errors(raw: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_event(raw)


# Redeem codes ---------------------------------------------------------------------------------
def test_codes_are_readable_and_carry_at_least_60_random_bits() -> None:
    assert len(set(CODE_ALPHABET)) == len(CODE_ALPHABET) == 32
    assert not set("ILOU") & set(CODE_ALPHABET)
    code = new_code()
    prefix, *groups = code.split("-")
    assert prefix == "FORGE" and [len(g) for g in groups] == [4, 4, 4]
    assert all(c in CODE_ALPHABET for c in "".join(groups))
    assert math.log2(len(CODE_ALPHABET)) * len("".join(groups)) >= 60


def test_codes_are_unpredictable_and_use_the_whole_alphabet() -> None:
    codes = [new_code() for _ in range(4000)]
    assert len(set(codes)) == len(codes)
    symbols = Counter("".join(c.removeprefix("FORGE-").replace("-", "") for c in codes))
    assert set(symbols) == set(CODE_ALPHABET)
    expected = 4000 * 12 / 32  # 1500 per symbol; a biased generator strays far from it
    assert all(abs(n - expected) < 250 for n in symbols.values()), symbols


def test_typed_codes_are_normalised_to_their_canonical_form() -> None:
    code = new_code()
    assert normalize_code(code) == code
    assert normalize_code(f"  {code.lower()} ") == code
    assert normalize_code(code.replace("-", "")) == code
    assert normalize_code("forge-0i1l-oooo-2345") == "FORGE-0111-0000-2345"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "FORGE",
        "FORGE-ABCD-EFGH",
        "FORGE-ABCD-EFGH-JKMNP",
        "XORGE-ABCD-EFGH-JKMN",
        "FORGE-ABCD-EFGH-JKMU",
        "FORGE-ABCD-EFGH-JK#N",
    ],
)
def test_strings_that_cannot_be_codes_normalise_to_none(raw: str) -> None:
    assert normalize_code(raw) is None


def test_a_code_states_its_single_reason_for_refusing() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    code = RedeemCode(code="FORGE-AAAA-AAAA-AAAA", bucket=Bucket.RMB, amount=1, max_claims=2)
    assert code.state(now) == "active"
    assert code.model_copy(update={"claim_count": 2}).state(now) == "exhausted"
    expiring = code.model_copy(update={"expires_at": now + timedelta(seconds=1)})
    assert expiring.state(now) == "active"
    assert expiring.state(now + timedelta(seconds=1)) == "expired"
    assert code.model_copy(update={"code_status": CodeStatus.DISABLED}).state(now) == "disabled"
    values = expiring.item_values()
    assert values["valid_until_epoch"] == int((now + timedelta(seconds=1)).timestamp())
    assert RedeemCode.model_validate({**values, "pk": "x", "sk": "y"}) == expiring
