"""A verifier that honours a revocation list: revoked tokens and deleted accounts are 401
``token_revoked``, a list that cannot tell makes it 503, other tokens keep working."""

from __future__ import annotations

import pytest

from faas_common.errors import DependencyUnavailable, Unauthorized
from faas_common.revocation import RevocationsUnavailable
from faas_common.security import TokenVerifier
from tests.support.keys import RsaKeys
from tests.unit.common.test_security import CONSUMER_KEY, ISSUER, private_key, token


class FakeRevocations:
    def __init__(
        self, *, tokens: frozenset[str] = frozenset(), users: frozenset[str] = frozenset()
    ) -> None:
        self.tokens = set(tokens)
        self.users = set(users)
        self.available = True

    def is_revoked(self, *, user_id: str, jti: str | None) -> bool:
        if not self.available:
            raise RevocationsUnavailable("not loaded")
        return user_id in self.users or jti in self.tokens


def honouring(rsa_keys: RsaKeys, revocations: FakeRevocations) -> TokenVerifier:
    verifier = TokenVerifier.from_file(
        rsa_keys.public_path, issuer=ISSUER, consumer_key=CONSUMER_KEY
    )
    verifier.honour(revocations)
    return verifier


async def test_a_revoked_token_is_refused_and_another_one_accepted(rsa_keys: RsaKeys) -> None:
    verifier = honouring(rsa_keys, FakeRevocations(tokens=frozenset({"revoked-jti"})))
    key = private_key(rsa_keys)
    with pytest.raises(Unauthorized) as raised:
        await verifier.verify(token(key, jti="revoked-jti"))
    assert (raised.value.status_code, raised.value.code) == (401, "token_revoked")
    claims = await verifier.verify(token(key, jti="other-jti"))
    assert claims.token_id == "other-jti"
    assert (await verifier.verify(token(key))).token_id is None


async def test_every_token_of_a_deleted_account_is_refused(rsa_keys: RsaKeys) -> None:
    verifier = honouring(rsa_keys, FakeRevocations(users=frozenset({"user-1"})))
    key = private_key(rsa_keys)
    for claims in ({"jti": "a"}, {"jti": "b"}, {}):
        with pytest.raises(Unauthorized) as raised:
            await verifier.verify(token(key, **claims))
        assert raised.value.code == "token_revoked"
    assert (await verifier.verify(token(key, sub="user-2"))).user_id == "user-2"


async def test_an_unknown_revocation_state_is_503(rsa_keys: RsaKeys) -> None:
    revocations = FakeRevocations()
    revocations.available = False
    verifier = honouring(rsa_keys, revocations)
    with pytest.raises(DependencyUnavailable) as raised:
        await verifier.verify(token(private_key(rsa_keys), jti="x"))
    assert raised.value.status_code == 503
    assert raised.value.headers["Retry-After"] == "2"


async def test_a_jti_that_is_not_a_string_is_invalid(rsa_keys: RsaKeys) -> None:
    verifier = honouring(rsa_keys, FakeRevocations())
    with pytest.raises(Unauthorized) as raised:
        await verifier.verify(token(private_key(rsa_keys), jti=12))
    assert raised.value.code == "invalid_token"
