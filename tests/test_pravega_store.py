"""The Pravega store against a real standalone Pravega (scripts/pravega).

Most tests use the shared Pravega that ``scripts/test`` starts (or start it
here when it is not running) and a scope of their own. The outage tests run
a private Pravega on other ports, since they pause and restart it. Without
Java or Maven the tests are skipped, except under CI (env ``CI`` set), where
that is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
import uuid

import pytest

from harness.loopback import until
from harness.media import write_random_video
from media.pravega_catalog import stream_prefix
from media.pravega_store import PravegaStore, ingest_into_pravega
from media.store import NewVideo, NotFound, Unavailable
from pravega_workers.blocking import stream_manager
from settings import settings_from_dict

pytestmark = pytest.mark.pravega

TIMEOUT = 2.0


def make_settings(uri: str, scope: str | None = None):
    return settings_from_dict({
        "storage": {"backend": "pravega"},
        "pravega": {"controller_uri": uri, "scope": scope or f"test-{uuid.uuid4().hex[:12]}", "timeout": TIMEOUT},
    })


@pytest.fixture
def settings(controller_uri):
    return make_settings(controller_uri)


@pytest.fixture(scope="session")
def big_file(tmp_path_factory):
    """20 MiB of random bytes: the store never looks inside, and 20 MiB takes several 8 MiB appends."""
    path = tmp_path_factory.mktemp("pravega") / "big.mp4"
    write_random_video(str(path), 20 * 1024 * 1024 + 12345, seed=7)
    return path


def big_video(path, video_id="big_one", name="Big One") -> NewVideo:
    return NewVideo(
        id=video_id, source_path=str(path), name=name, mime_type="video/mp4", duration_seconds=12.5,
        captions={"en": (b"1\n00:00:00,000 --> 00:00:01,000\nHi\n", "srt"),
                  "pt-BR": (b"WEBVTT\n\n00:00.000 --> 00:01.000\nOi\n", "vtt")},
        poster=b"\xff\xd8\xff" + random.Random(3).randbytes(5000), metadata={"width": 640},
    )


async def read_all(store, video, start, end, chunk_size) -> bytes:
    out = bytearray()
    async with contextlib.aclosing(store.read(video, start, end, chunk_size)) as chunks:
        async for chunk in chunks:
            assert 0 < len(chunk) <= chunk_size
            out += chunk
    return bytes(out)


@contextlib.asynccontextmanager
async def running(settings):
    store = PravegaStore(settings)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


def test_ingested_video_reads_back_byte_for_byte(settings, big_file):
    item = big_video(big_file)
    record = ingest_into_pravega(settings, item, lambda done: None)
    data = big_file.read_bytes()

    async def check():
        async with running(settings) as store:
            video = store.get(item.id)
            assert video == record
            assert (video.size, video.name, video.mime_type, video.duration_seconds) == (len(data), "Big One",
                                                                                         "video/mp4", 12.5)
            assert [(t.lang, t.format) for t in video.captions] == [("en", "srt"), ("pt-BR", "vtt")]
            assert video.has_poster and video.metadata["width"] == 640
            assert await read_all(store, video, 0, video.size, 1024 * 1024) == data
            rng = random.Random(11)
            for _ in range(40):
                start = rng.randrange(video.size)
                end = rng.randint(start, min(video.size, start + rng.choice([1, 1000, 700_000, 3_000_000])))
                chunk_size = rng.choice([1, 4096, 65536, 1024 * 1024])
                if chunk_size == 1:
                    end = min(end, start + 50)
                assert await read_all(store, video, start, end, chunk_size) == data[start:end], (start, end)
            source, version = await store.caption_source(video, "en")
            assert source == item.captions["en"][0]
            # The version names the stream, so it changes with every ingest.
            assert version.startswith(video.locator + ".")
            assert (await store.caption_source(video, "pt-BR"))[0] == item.captions["pt-BR"][0]
            assert await store.poster(video) == item.poster
            with pytest.raises(NotFound):
                await store.caption_source(video, "de")
            assert (await store.health())["ok"] is True

    asyncio.run(check())


def test_ingest_again_is_a_no_op_and_a_change_replaces(settings, big_file):
    item = big_video(big_file)
    first = ingest_into_pravega(settings, item, lambda done: None)
    assert ingest_into_pravega(settings, item, lambda done: None) == first

    renamed = big_video(big_file, name="Big One, renamed")
    second = ingest_into_pravega(settings, renamed, lambda done: None)
    assert second.etag != first.etag and second.name == "Big One, renamed"
    third = ingest_into_pravega(settings, big_video(big_file, name="Third"), lambda done: None)

    names = stream_manager(settings.pravega.controller_uri).list_stream(settings.pravega.scope)
    ours = {n for n in names if n.startswith(stream_prefix(item.id))}
    # The latest version and the one before it, whose readers may still be busy.
    assert ours == {third.locator, second.locator}

    async def check():
        async with running(settings) as store:
            assert list(store.videos()) == [item.id]
            assert store.get(item.id).name == "Third"

    asyncio.run(check())


def test_an_abandoned_read_releases_its_reader(settings, big_file):
    item = big_video(big_file)
    ingest_into_pravega(settings, item, lambda done: None)

    async def check():
        async with running(settings) as store:
            video = store.get(item.id)
            chunks = store.read(video, 0, video.size, 65536)
            await anext(chunks)
            assert (await store.health())["readsInProgress"] == 1
            await chunks.aclose()
            assert (await store.health())["readsInProgress"] == 0
            assert await read_all(store, video, 100, 200, 10) == big_file.read_bytes()[100:200]

    asyncio.run(check())


def test_a_video_ingested_elsewhere_appears_on_every_instance(settings, big_file):
    async def check():
        async with running(settings) as first, running(settings) as second:
            assert first.videos() == second.videos() == {}
            changes = []
            second.add_listener(lambda: changes.append(set(second.videos())))
            item = big_video(big_file, video_id="late.arrival")
            started = time.monotonic()
            await asyncio.to_thread(ingest_into_pravega, settings, item, lambda done: None)
            await until(lambda: item.id in second.videos(), 5.0, step=0.1)
            assert time.monotonic() - started < 5.0
            assert changes[-1] == {item.id}
            video = second.get(item.id)
            assert await read_all(second, video, 5, 100_005, 8192) == big_file.read_bytes()[5:100_005]
            await until(lambda: item.id in first.videos(), 5.0, step=0.1)

    asyncio.run(check())


def test_a_paused_pravega_gives_prompt_503s_and_service_resumes(private_pravega, big_file):
    settings = make_settings(private_pravega.uri)
    item = big_video(big_file)
    ingest_into_pravega(settings, item, lambda done: None)
    data = big_file.read_bytes()

    async def check():
        async with running(settings) as store:
            video = store.get(item.id)
            assert await read_all(store, video, 0, 1000, 4096) == data[:1000]
            # SIGSTOP: connections stay open and nothing answers, the worst case for a client.
            private_pravega.signal(signal.SIGSTOP)
            try:
                started = time.monotonic()
                with pytest.raises(Unavailable):
                    await read_all(store, video, 1000, 5_000_000, 1024 * 1024)
                assert time.monotonic() - started < TIMEOUT + 1.0
                health = await until(lambda: _degraded(store), TIMEOUT + 1.0, step=0.1)
                assert health["error"]
                started = time.monotonic()
                with pytest.raises(Unavailable):
                    await read_all(store, video, 0, 10, 10)
                assert time.monotonic() - started < 0.5  # known to be down: no waiting
            finally:
                private_pravega.signal(signal.SIGCONT)
            await until(lambda: _healthy(store), 30.0, step=0.2)
            assert await read_all(store, video, 0, video.size, 1024 * 1024) == data

    asyncio.run(check())


def test_a_restarted_pravega_is_used_again(private_pravega, big_file):
    settings = make_settings(private_pravega.uri)
    item = big_video(big_file)
    ingest_into_pravega(settings, item, lambda done: None)

    async def check():
        async with running(settings) as store:
            video = store.get(item.id)
            private_pravega.stop()
            started = time.monotonic()
            with pytest.raises(Unavailable):
                await read_all(store, video, 0, 1_000_000, 65536)
            assert time.monotonic() - started < TIMEOUT + 1.0
            await until(lambda: _degraded(store), TIMEOUT + 1.0, step=0.1)

            private_pravega.start()
            await until(lambda: _healthy(store), 60.0, step=0.2)
            # The standalone keeps streams in memory: the new one starts empty.
            await until(lambda: not store.videos(), 5.0, step=0.1)
            fresh = big_video(big_file, video_id="after-restart")
            await asyncio.to_thread(ingest_into_pravega, settings, fresh, lambda done: None)
            await until(lambda: fresh.id in store.videos(), 5.0, step=0.1)
            video = store.get(fresh.id)
            assert await read_all(store, video, 0, video.size, 1024 * 1024) == big_file.read_bytes()

    asyncio.run(check())


async def _degraded(store):
    health = await store.health()
    return health if not health["ok"] else None


async def _healthy(store):
    return (await store.health())["ok"]
