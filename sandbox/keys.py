"""The sandbox's own ES256 signing keys, published as a JWKS.

Keys are generated fresh for every app instance: the private half never leaves the process, and
receivers must fetch the JWKS instead of pinning a key.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: ec.EllipticCurvePrivateKey

    def public_jwk(self) -> dict[str, Any]:
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": _b64url(numbers.x.to_bytes(32, "big")),
            "y": _b64url(numbers.y.to_bytes(32, "big")),
            "kid": self.kid,
            "use": "sig",
            "alg": "ES256",
        }


def new_signing_key() -> SigningKey:
    return SigningKey(
        kid=f"sbx_{secrets.token_hex(8)}", private_key=ec.generate_private_key(ec.SECP256R1())
    )
