"""Storage limits: every bucket and the stream have a ``max_bytes``; a full one is a 507
``storage_full`` (records, idempotency keys) or a 429 (the stream), never a 500 or a job queued
without its record."""

from __future__ import annotations

import uuid

import nats.js.errors
from nats.js import JetStreamContext

from faas_common.contract import (
    EXECUTIONS_BUCKET,
    EXECUTIONS_STREAM,
    FUNCTIONS_BUCKET,
    IDEMPOTENCY_BUCKET,
)
from tests.integration.publisher.conftest import SettingsFactory
from tests.integration.publisher.helpers import publisher, register_new, stream_depth
from tests.unit.publisher.factories import PUBLISH, publish_body
from tests.unit.registry.factories import User

TINY = 8192


async def fill(js: JetStreamContext, bucket: str) -> None:
    """Write filler entries (another user's keys) until the bucket refuses one."""
    kv = await js.key_value(bucket)
    refused: nats.js.errors.APIError | None = None
    for n in range(1000):  # bounded: a TINY bucket is full after a few dozen
        try:
            await kv.put(f"filler.{n}", b"x" * 200)
        except nats.js.errors.APIError as exc:
            refused = exc
            break
    assert refused is not None, f"the {bucket} bucket never filled up"
    assert refused.err_code == 10077


async def test_every_bucket_and_the_stream_get_their_configured_size(
    js: JetStreamContext, settings_for: SettingsFactory
) -> None:
    settings = settings_for(
        executions_max_bytes=3 * 1_048_576,
        idempotency_max_bytes=2 * 1_048_576,
        functions_max_bytes=5 * 1_048_576,
        stream_max_bytes=7 * 1_048_576,
    )
    async with publisher(settings):
        sizes = {
            bucket: (await js.stream_info(f"KV_{bucket}")).config.max_bytes
            for bucket in (EXECUTIONS_BUCKET, IDEMPOTENCY_BUCKET, FUNCTIONS_BUCKET)
        }
        stream = (await js.stream_info(EXECUTIONS_STREAM)).config.max_bytes
    assert sizes == {
        EXECUTIONS_BUCKET: 3 * 1_048_576,
        IDEMPOTENCY_BUCKET: 2 * 1_048_576,
        FUNCTIONS_BUCKET: 5 * 1_048_576,
    }
    assert stream == 7 * 1_048_576

    # A restart with other sizes brings the existing buckets and stream in line.
    async with publisher(settings_for(executions_max_bytes=TINY, stream_max_bytes=TINY)):
        assert (await js.stream_info(f"KV_{EXECUTIONS_BUCKET}")).config.max_bytes == TINY
        assert (await js.stream_info(EXECUTIONS_STREAM)).config.max_bytes == TINY


async def test_a_full_records_bucket_refuses_the_call_with_507_and_queues_nothing(
    js: JetStreamContext, settings_for: SettingsFactory, alice: User
) -> None:
    async with publisher(settings_for(executions_max_bytes=TINY)) as client:
        await register_new(js, alice.id)
        await fill(js, EXECUTIONS_BUCKET)
        sync = await client.post(PUBLISH, json=publish_body(), headers=alice.headers)
        later = await client.post(PUBLISH, json=publish_body(is_async=True), headers=alice.headers)
        listed = await client.get("/publisher/executions", headers=alice.headers)
        depth = await stream_depth(js)

    for response in (sync, later):
        assert response.status_code == 507, response.text
        body = response.json()
        assert body["code"] == "storage_full"
        assert "full" in body["detail"]
    assert depth == 0  # nothing queued without its record
    assert listed.status_code == 200
    assert listed.json() == {"executions": []}  # the filler is another user's; Alice has no record


async def test_a_full_idempotency_bucket_refuses_a_keyed_call_with_507(
    js: JetStreamContext, settings_for: SettingsFactory, alice: User
) -> None:
    async with publisher(settings_for(idempotency_max_bytes=TINY)) as client:
        await register_new(js, alice.id)
        await fill(js, IDEMPOTENCY_BUCKET)
        headers = {**alice.headers, "Idempotency-Key": uuid.uuid4().hex}
        response = await client.post(PUBLISH, json=publish_body(is_async=True), headers=headers)
        depth = await stream_depth(js)

    assert response.status_code == 507, response.text
    assert response.json()["code"] == "storage_full"
    assert depth == 0


async def test_a_stream_over_its_bytes_is_429_like_one_over_its_messages(
    js: JetStreamContext, settings_for: SettingsFactory, alice: User
) -> None:
    async with publisher(settings_for(stream_max_bytes=TINY)) as client:
        await register_new(js, alice.id)
        big = "x" * (TINY // 2)
        answers = [
            await client.post(
                PUBLISH, json=publish_body(argument=big, is_async=True), headers=alice.headers
            )
            for _ in range(3)
        ]

    assert [a.status_code for a in answers][:1] == [202]
    refused = answers[-1]
    assert refused.status_code == 429, refused.text
    assert refused.json()["code"] == "concurrency_limit"
