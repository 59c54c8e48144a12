"""Webhook signature checks: a catalogue of forgeries, each refused for the right reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from linkdesk.webhooks.verify import JwksCache, Reason, WebhookVerifier
from tests.unit.conftest import FAKE_BASE, FakeClock, WebhookSigner

BODY = b'{"webhook_event":"link.state_changed","link_id":"mk_1","state":"connected"}'


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def hand_made(header: dict, claims: dict, signature: bytes = b"") -> str:
    head = b64(json.dumps(header).encode())
    body = b64(json.dumps(claims).encode())
    return f"{head}.{body}.{b64(signature)}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def jwks(signer: WebhookSigner, clock: FakeClock) -> JwksCache:
    return JwksCache.for_base_url(FAKE_BASE, http_client=signer.http_client(), clock=clock)


@pytest.fixture
def verifier(jwks: JwksCache, clock: FakeClock) -> WebhookVerifier:
    return WebhookVerifier(jwks, clock=clock, issuer=FAKE_BASE)


def claims_for(body: bytes, clock: FakeClock, **extra) -> dict:
    return {
        "iss": FAKE_BASE,
        "iat": int(clock.now.timestamp()),
        "request_body_sha256": hashlib.sha256(body).hexdigest(),
        **extra,
    }


def test_a_genuine_signature_is_accepted(verifier, signer, clock):
    verdict = verifier.verify(BODY, signer.signature(BODY, iat=clock.now))
    assert verdict.ok and verdict.reason is Reason.OK
    assert verdict.kid == signer.kid


def forgeries(signer: WebhookSigner, clock: FakeClock) -> dict[str, tuple[bytes, str | None]]:
    """name -> (body as received, MoneyKit-Signature header)."""
    now = clock.now
    other_key = ec.generate_private_key(ec.SECP256R1())
    public_pem = (
        signer.keys[signer.kid]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    hs_header = {"alg": "HS256", "kid": signer.kid, "typ": "JWT"}
    hs_signing_input = (
        f"{b64(json.dumps(hs_header).encode())}.{b64(json.dumps(claims_for(BODY, clock)).encode())}"
    )
    hs_signature = hmac.new(public_pem, hs_signing_input.encode(), hashlib.sha256).digest()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "wrong key": (BODY, signer.signature(BODY, iat=now, key=other_key)),
        "alg none": (BODY, hand_made({"alg": "none", "kid": signer.kid}, claims_for(BODY, clock))),
        "HS256 keyed with the public key": (BODY, f"{hs_signing_input}.{b64(hs_signature)}"),
        "RS256": (
            BODY,
            jwt.encode(
                claims_for(BODY, clock), rsa_key, algorithm="RS256", headers={"kid": signer.kid}
            ),
        ),
        "stale iat": (BODY, signer.signature(BODY, iat=now - timedelta(minutes=5, seconds=2))),
        "future iat": (BODY, signer.signature(BODY, iat=now + timedelta(seconds=62))),
        "body altered by one byte": (
            BODY.replace(b"connected", b"connectee"),
            signer.signature(BODY, iat=now),
        ),
        "unknown kid": (BODY, signer.signature(BODY, iat=now, kid="nope", key=other_key)),
        "missing header": (BODY, None),
        "empty header": (BODY, "  "),
        "garbage header": (BODY, "this is not a jwt"),
        "missing kid": (
            BODY,
            jwt.encode(claims_for(BODY, clock), signer.keys[signer.kid], algorithm="ES256"),
        ),
        "missing body hash": (
            BODY,
            signer.signature(BODY, iat=now, claims={"request_body_sha256": None}),
        ),
        "wrong issuer": (
            BODY,
            signer.signature(BODY, iat=now, claims={"iss": "https://evil.example"}),
        ),
        "signature bytes flipped": (BODY, signer.signature(BODY, iat=now)[:-4] + "AAAA"),
    }


EXPECTED = {
    "wrong key": Reason.BAD_SIGNATURE,
    "alg none": Reason.BAD_ALG,
    "HS256 keyed with the public key": Reason.BAD_ALG,
    "RS256": Reason.BAD_ALG,
    "stale iat": Reason.STALE,
    "future iat": Reason.FUTURE,
    "body altered by one byte": Reason.BODY_MISMATCH,
    "unknown kid": Reason.UNKNOWN_KID,
    "missing header": Reason.MISSING_SIGNATURE,
    "empty header": Reason.MISSING_SIGNATURE,
    "garbage header": Reason.MALFORMED,
    "missing kid": Reason.MISSING_KID,
    "missing body hash": Reason.MALFORMED,
    "wrong issuer": Reason.BAD_ISSUER,
    "signature bytes flipped": Reason.BAD_SIGNATURE,
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_forgery_is_refused_with_its_reason(name, verifier, signer, clock):
    body, header = forgeries(signer, clock)[name]
    verdict = verifier.verify(body, header)
    assert not verdict.ok
    assert verdict.reason is EXPECTED[name]


@pytest.mark.parametrize(
    ("age", "ok"),
    [
        (timedelta(minutes=4, seconds=50), True),
        (timedelta(minutes=5, seconds=5), False),
        (timedelta(seconds=-50), True),  # a little clock skew is tolerated
        (timedelta(seconds=-70), False),
    ],
)
def test_age_limits_use_the_injected_clock(verifier, signer, clock, age, ok):
    header = signer.signature(BODY, iat=clock.now - age)
    assert verifier.verify(BODY, header).ok is ok


def test_issuer_is_not_checked_unless_configured(jwks, signer, clock):
    lenient = WebhookVerifier(jwks, clock=clock)
    header = signer.signature(BODY, iat=clock.now, claims={"iss": "http://localhost:8611"})
    assert lenient.verify(BODY, header).ok


class TestJwksCache:
    def test_keys_are_fetched_once_and_reused(self, verifier, signer, clock):
        for _ in range(5):
            assert verifier.verify(BODY, signer.signature(BODY, iat=clock.now)).ok
        assert signer.jwks_fetches == 1

    def test_unknown_kids_refetch_at_most_once_per_five_minutes(self, verifier, signer, clock):
        assert verifier.verify(BODY, signer.signature(BODY, iat=clock.now)).ok
        forged = ec.generate_private_key(ec.SECP256R1())

        def forge(i: int) -> Reason:
            header = signer.signature(BODY, iat=clock.now, kid=f"forged-{i}", key=forged)
            return verifier.verify(BODY, header).reason

        # Keys were fetched a moment ago: forged kids cannot cause any refetch yet.
        assert {forge(i) for i in range(20)} == {Reason.UNKNOWN_KID}
        assert signer.jwks_fetches == 1
        clock.advance(5 * 60 + 1)
        assert {forge(i) for i in range(20, 40)} == {Reason.UNKNOWN_KID}
        assert signer.jwks_fetches == 2  # one refetch for twenty unknown kids
        clock.advance(5 * 60 + 1)
        assert forge(99) is Reason.UNKNOWN_KID
        assert signer.jwks_fetches == 3

    def test_a_rotated_key_is_picked_up(self, verifier, signer, clock):
        assert verifier.verify(BODY, signer.signature(BODY, iat=clock.now)).ok
        clock.advance(6 * 60)
        signer.rotate()
        assert verifier.verify(BODY, signer.signature(BODY, iat=clock.now)).ok
        # The previous key is still published and still accepted.
        assert verifier.verify(BODY, signer.signature(BODY, iat=clock.now, kid="key-1")).ok
        assert signer.jwks_fetches == 2

    def test_a_rotation_right_after_a_fetch_waits_for_the_interval(self, verifier, signer, clock):
        assert verifier.verify(BODY, signer.signature(BODY, iat=clock.now)).ok
        signer.rotate()
        # MoneyKit retries for hours, so "unknown for up to five minutes" loses nothing.
        assert verifier.verify(BODY, signer.signature(BODY, iat=clock.now)).reason is (
            Reason.UNKNOWN_KID
        )
        clock.advance(5 * 60 + 1)
        assert verifier.verify(BODY, signer.signature(BODY, iat=clock.now)).ok

    def test_keys_expire_after_twelve_hours(self, verifier, signer, clock):
        assert verifier.verify(BODY, signer.signature(BODY, iat=clock.now)).ok
        clock.advance(12 * 3600 - 10)
        assert verifier.verify(BODY, signer.signature(BODY, iat=clock.now)).ok
        assert signer.jwks_fetches == 1
        clock.advance(20)
        assert verifier.verify(BODY, signer.signature(BODY, iat=clock.now)).ok
        assert signer.jwks_fetches == 2

    def test_unreachable_keys_mean_try_later_without_hammering(self, verifier, signer, clock):
        signer.jwks_down = True
        for _ in range(5):
            verdict = verifier.verify(BODY, signer.signature(BODY, iat=clock.now))
            assert verdict.reason is Reason.JWKS_UNAVAILABLE
        assert signer.jwks_fetches == 1
        signer.jwks_down = False
        clock.advance(5 * 60 + 1)
        assert verifier.verify(BODY, signer.signature(BODY, iat=clock.now)).ok

    def test_keys_of_other_types_are_ignored(self, signer, clock):
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
        original = signer.jwks

        def with_rsa() -> dict:
            document = original()
            document["keys"].append({**rsa_jwk, "kid": "rsa-1", "use": "sig"})
            return document

        signer.jwks = with_rsa
        cache = JwksCache.for_base_url(FAKE_BASE, http_client=signer.http_client(), clock=clock)
        assert cache.key("rsa-1") is None
        assert cache.key(signer.kid) is not None
