"""JSON Web Tokens made for the jwt-auth tests: HS256 with the standard library, RS256 with a
key the real openssl makes and signs with (nothing here checks a token: the plugin does)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

FUTURE = 4_102_444_800  # 2100-01-01
PAST = 1_000_000_000  # 2001-09-09


def b64url(value: bytes | int) -> str:
    """Unpadded base64url; an int as its big-endian bytes (as a JWK's n and e)."""
    if isinstance(value, int):
        value = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(value).rstrip(b"=").decode()


def _part(value: dict[str, object]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def hs256_token(claims: dict[str, object], secret: str,
                header: dict[str, object] | None = None) -> str:
    signed = f"{_part(header or {'alg': 'HS256', 'typ': 'JWT'})}.{_part(claims)}"
    return f"{signed}.{b64url(hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest())}"


@dataclass(frozen=True)
class RsaSigner:
    key_file: Path
    pem: str  # the public key, SubjectPublicKeyInfo ("PUBLIC KEY")
    pkcs1_pem: str  # the same, PKCS#1 ("RSA PUBLIC KEY")
    n: int
    e: int

    def token(self, claims: dict[str, object], header: dict[str, object] | None = None) -> str:
        signed = f"{_part(header or {'alg': 'RS256', 'typ': 'JWT'})}.{_part(claims)}"
        signature = _openssl("dgst", "-sha256", "-sign", str(self.key_file),
                             stdin=signed.encode())
        return f"{signed}.{b64url(signature)}"


def _openssl(*args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True,
                          check=True).stdout


def openssl_signer(directory: Path, bits: int = 2048) -> RsaSigner:
    """A fresh RSA key, its private half in `directory`."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (Debian: openssl)")
    key_file = directory / "key.pem"
    _openssl("genrsa", "-out", str(key_file), str(bits))
    pem = _openssl("rsa", "-in", str(key_file), "-pubout").decode()
    pkcs1 = _openssl("rsa", "-in", str(key_file), "-RSAPublicKey_out").decode()
    modulus = _openssl("rsa", "-in", str(key_file), "-noout", "-modulus").decode()
    n = int(modulus.strip().split("=", 1)[1], 16)
    text = _openssl("rsa", "-in", str(key_file), "-noout", "-text").decode()
    e = int(text.split("publicExponent: ", 1)[1].split()[0])
    return RsaSigner(key_file, pem, pkcs1, n, e)
