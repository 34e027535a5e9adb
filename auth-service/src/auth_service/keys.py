"""The token signing key: loaded from a PEM file, generated there on first start when allowed."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def generate_key_pair(private_path: Path, public_path: Path | None = None) -> None:
    """Write a new RSA 2048 key pair (private key mode 0600) unless the private key exists."""
    private_path.parent.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Write to a temporary file, then link it into place: a process racing us either sees no
    # key or a complete one, and the loser of the race keeps the winner's key.
    temporary = private_path.with_name(f".{private_path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    try:
        os.link(temporary, private_path)
    except FileExistsError:
        return
    finally:
        temporary.unlink()
    if public_path is not None:
        public_temporary = public_path.with_name(f".{public_path.name}.{os.getpid()}.tmp")
        public_temporary.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        public_temporary.replace(public_path)


def load_private_key(path: Path, *, generate: bool) -> rsa.RSAPrivateKey:
    if not path.exists():
        if not generate:
            raise FileNotFoundError(
                f"JWT private key {path} not found (set AUTH_PRIVATE_KEY_FILE, or "
                "AUTH_GENERATE_KEYS=true to create one)"
            )
        generate_key_pair(path, path.with_name("jwt-public.pem"))
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path} is not an RSA private key")
    if key.key_size < 2048:
        raise ValueError(f"{path}: RSA keys shorter than 2048 bits are refused")
    return key
