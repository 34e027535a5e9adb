"""RSA key pairs for JWT signing in tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass(frozen=True)
class RsaKeys:
    private_pem: bytes
    public_pem: bytes
    private_path: Path
    public_path: Path


def generate_rsa_keys(directory: Path, bits: int = 2048) -> RsaKeys:
    """Generate a key pair and write it as ``private.pem`` (PKCS#8) and ``public.pem`` (SPKI)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private_pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    directory.mkdir(parents=True, exist_ok=True)
    private_path = directory / "private.pem"
    public_path = directory / "public.pem"
    private_path.write_bytes(private_pem)
    private_path.chmod(0o600)
    public_path.write_bytes(public_pem)
    return RsaKeys(private_pem, public_pem, private_path, public_path)
