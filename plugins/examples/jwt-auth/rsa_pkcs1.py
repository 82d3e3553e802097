"""RSA public keys (PEM or JWK-style n/e) and RSASSA-PKCS1-v1_5 SHA-256 verification (RFC 8017
section 8.2.2), in pure Python: componentize-py's CPython has hashlib but no RSA.

The signature is checked by encoding the expected block in full and comparing it with the
recovered one, never by parsing the recovered block: parsing is where forgeries against small
exponents (Bleichenbacher 2006) got in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

MIN_MODULUS_BITS = 2048
# DER of DigestInfo { AlgorithmIdentifier { id-sha256, NULL }, OCTET STRING (32 bytes) },
# before the digest (RFC 8017 section 9.2, note 1).
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
RSA_ENCRYPTION_OID = bytes.fromhex("2a864886f70d010101")  # 1.2.840.113549.1.1.1
SEQUENCE, INTEGER, BIT_STRING, OID, NULL = 0x30, 0x02, 0x03, 0x06, 0x05
PEM_LABELS = ("PUBLIC KEY", "RSA PUBLIC KEY")  # SubjectPublicKeyInfo, PKCS#1 RSAPublicKey


class BadKey(ValueError):
    """A configured key that cannot be used; the message says why."""


@dataclass(frozen=True)
class RsaPublicKey:
    n: int
    e: int

    def __post_init__(self) -> None:
        if self.n.bit_length() < MIN_MODULUS_BITS:
            raise BadKey(f"the RSA modulus has {self.n.bit_length()} bits: at least "
                            f"{MIN_MODULUS_BITS}")
        if self.e < 3 or self.e % 2 == 0:
            raise BadKey(f"the RSA exponent {self.e} is not an odd number of at least 3")

    @property
    def size(self) -> int:
        """The modulus length in bytes: every signature is exactly this long."""
        return (self.n.bit_length() + 7) // 8


def verify_sha256(key: RsaPublicKey, message: bytes, signature: bytes) -> bool:
    if len(signature) != key.size:
        return False
    s = int.from_bytes(signature, "big")
    if s >= key.n:
        return False
    recovered = pow(s, key.e, key.n).to_bytes(key.size, "big")
    digest_info = SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
    padding = key.size - len(digest_info) - 3
    expected = b"\x00\x01" + b"\xff" * padding + b"\x00" + digest_info
    return hmac.compare_digest(recovered, expected)


def key_from_n_e(n: str, e: str) -> RsaPublicKey:
    """A key from its modulus and exponent, base64url as in a JWK (RFC 7518 section 6.3.1)."""
    return RsaPublicKey(_uint(n, "rs256-n"), _uint(e, "rs256-e"))


def _uint(text: str, what: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except (binascii.Error, ValueError):
        raise BadKey(f"{what} is not base64url") from None
    if not raw:
        raise BadKey(f"{what} is empty")
    return int.from_bytes(raw, "big")


def key_from_pem(pem: str) -> RsaPublicKey:
    """A key from a PEM "PUBLIC KEY" (SubjectPublicKeyInfo) or "RSA PUBLIC KEY" (PKCS#1)."""
    lines = [line.strip() for line in pem.strip().splitlines() if line.strip()]
    label = next((name for name in PEM_LABELS
                  if lines and lines[0] == f"-----BEGIN {name}-----"
                  and lines[-1] == f"-----END {name}-----"), None)
    if label is None:
        raise BadKey("rs256-public-key is not a PEM PUBLIC KEY or RSA PUBLIC KEY")
    try:
        der = base64.b64decode("".join(lines[1:-1]), validate=True)
    except (binascii.Error, ValueError):
        raise BadKey("rs256-public-key: its PEM body is not base64") from None
    try:
        return _rsa_public_key(der if label == "RSA PUBLIC KEY" else _spki_key(der))
    except IndexError:
        raise BadKey("rs256-public-key: its DER ends early") from None


def _tlv(data: bytes, at: int, tag: int) -> tuple[bytes, int]:
    """The contents of the DER element of `tag` at `at`, and where the next one starts."""
    if data[at] != tag:
        raise BadKey(f"rs256-public-key: expected DER tag {tag:#04x}, found {data[at]:#04x}")
    length, at = data[at + 1], at + 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4:
            raise BadKey("rs256-public-key: a DER length is malformed")
        length, at = int.from_bytes(data[at:at + count], "big"), at + count
    if at + length > len(data):
        raise BadKey("rs256-public-key: a DER element runs past the end")
    return data[at:at + length], at + length


def _spki_key(der: bytes) -> bytes:
    """The RSAPublicKey inside a SubjectPublicKeyInfo."""
    info, _ = _tlv(der, 0, SEQUENCE)
    algorithm, at = _tlv(info, 0, SEQUENCE)
    oid, _ = _tlv(algorithm, 0, OID)
    if oid != RSA_ENCRYPTION_OID:
        raise BadKey("rs256-public-key is not an RSA key")
    bits, _ = _tlv(info, at, BIT_STRING)
    if bits[:1] != b"\x00":
        raise BadKey("rs256-public-key: its key bit string is malformed")
    return bits[1:]


def _rsa_public_key(der: bytes) -> RsaPublicKey:
    body, _ = _tlv(der, 0, SEQUENCE)
    n, at = _tlv(body, 0, INTEGER)
    e, _ = _tlv(body, at, INTEGER)
    if n[:1] >= b"\x80" or e[:1] >= b"\x80":
        raise BadKey("rs256-public-key: a negative RSA integer")
    return RsaPublicKey(int.from_bytes(n, "big"), int.from_bytes(e, "big"))
