"""Fixtures shared by the tests: real media, a store holding it, the running app, real servers, Pravega.

Media is made once per session with PyAV (a few seconds of H.264/AAC MP4 and
VP9/Opus WebM) and ingested into a fresh store for each test through the same
ingest path users run. ``config`` is parametrized over both stores, so a
test that uses the app runs against the filesystem library and against a
scope of its own on the standalone Pravega, unless its module narrows
``config`` to the filesystem (tests of what does not depend on the store).
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid

import pytest

import backends
from harness.nodes import Server
from media.probe import poster_jpeg, probe
from media.sample import make_video, write_srt
from media.store import NewVideo
from settings import PravegaSettings, settings_from_dict
from tests.pravega_server import started_cluster, shared_controller, start_private

SRT_EN = [(0.0, 1.5, "Hello & welcome"), (1.5, 3.0, "<i>Second</i> line"), (3.0, 3.9, "Third")]
SRT_FR = [(0.0, 1.5, "Bonjour"), (1.5, 3.9, "Au revoir")]


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    make_video(str(folder / "clip.mp4"), seconds=4.0, container="mp4")
    make_video(str(folder / "clip.webm"), seconds=4.0, container="webm")
    write_srt(str(folder / "clip.en.srt"), SRT_EN)
    write_srt(str(folder / "clip.fr.srt"), SRT_FR)
    return folder


def new_video(path: str, video_id: str, name: str, captions: dict[str, str] | None = None) -> NewVideo:
    info = probe(path)
    return NewVideo(
        id=video_id,
        source_path=path,
        name=name,
        mime_type=info.mime_type,
        duration_seconds=info.duration_seconds,
        captions={lang: (open(p, "rb").read(), p.rsplit(".", 1)[1]) for lang, p in (captions or {}).items()},
        poster=poster_jpeg(path),
    )


@pytest.fixture(scope="session")
def sample_videos(media_dir) -> list[NewVideo]:
    return [
        new_video(str(media_dir / "clip.mp4"), "alpha", "Alpha Clip",
                  {"en": str(media_dir / "clip.en.srt"), "fr": str(media_dir / "clip.fr.srt")}),
        new_video(str(media_dir / "clip.webm"), "beta", "Beta Clip"),
    ]


@pytest.fixture
def library(tmp_path, sample_videos):
    from media.filesystem_ingest import ingest_into_library

    folder = tmp_path / "library"
    folder.mkdir()
    config = make_config(tmp_path)
    for item in sample_videos:
        ingest_into_library(config, item, lambda done: None)
    return folder


def make_config(tmp_path, **sections):
    raw = {
        "server": {"host": "127.0.0.1", "port": 0},
        "storage": {"backend": "filesystem", "library": str(tmp_path / "library"),
                    "cache_dir": str(tmp_path / "cache"), "scan_interval": 0.2},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return settings_from_dict(raw)


controller_uri = pytest.fixture(scope="session")(shared_controller)


@pytest.fixture(scope="module")
def pravega_cluster(tmp_path_factory):
    """The durable cluster (harness/pravega.py PravegaCluster), started once per run, in a fresh folder.

    Its tests (tests/test_cluster.py, the one module that uses it, so once a
    module is once a run) kill and revive its nodes; each leaves it serving
    for the next. Stopped when that module ends: eight idle JVMs would
    otherwise take CPU and 1.3 GiB from every test after it.
    """
    yield from started_cluster(tmp_path_factory.mktemp("pravega-cluster"))


@pytest.fixture(params=["filesystem", pytest.param("pravega", marks=pytest.mark.pravega)])
def config(request, tmp_path, sample_videos):
    """The app's settings, over a store already holding ``sample_videos``."""
    if request.param == "filesystem":
        request.getfixturevalue("library")
        yield make_config(tmp_path)
        return
    from media.pravega_store import ingest_into_pravega
    from pravega_workers.blocking import PravegaError, delete_scope, stream_manager

    uri = request.getfixturevalue("controller_uri")
    config = make_config(tmp_path, storage={"backend": "pravega", "library": str(tmp_path)},
                         pravega={"controller_uri": uri, "scope": f"test-{uuid.uuid4().hex[:12]}"})
    for item in sample_videos:
        ingest_into_pravega(config, item, lambda done: None)
    yield config
    # The standalone keeps every stream in memory until it is deleted; a test
    # that broke Pravega on purpose may leave nothing to delete.
    with contextlib.suppress(PravegaError):
        delete_scope(stream_manager(uri), config.pravega.scope)


@pytest.fixture
def ingest(config):
    """Adds a NewVideo to the running app's store, as the ingest command would."""
    return lambda item: backends.ingest(config, item, lambda done: None)


@pytest.fixture
def app(io_loop, config):
    from handlers.app import build_app

    application = io_loop.run_sync(lambda: build_app(config))
    yield application
    io_loop.run_sync(application.close)


def read_bytes(path: os.PathLike) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture
def servers(tmp_path):
    """Real ``server.py`` processes (see harness/nodes.py): makes servers in ``tmp_path``; stops them all afterwards, and shows their logs if the test failed."""
    made: list[Server] = []

    def make(name: str, **kwargs) -> Server:
        server = Server(str(tmp_path), name, **kwargs)
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()
        print(f"--- {server.name} ({server.url}) ---\n{server.log_tail()}")


@pytest.fixture
def pravega_settings(controller_uri):
    """Settings for a scope of the test's own on the shared Pravega, deleted afterwards."""
    from pravega_workers.blocking import delete_scope, stream_manager

    settings = PravegaSettings(controller_uri=controller_uri, scope=f"test-{os.urandom(6).hex()}")
    yield settings
    delete_scope(stream_manager(controller_uri), settings.scope)


@pytest.fixture
def private_pravega(tmp_path):
    """A Pravega of the test's own (see harness/pravega.py), to pause or stop; stopped afterwards."""
    pravega = start_private(tmp_path / "pravega")
    try:
        yield pravega
    finally:
        with contextlib.suppress(ProcessLookupError, FileNotFoundError):
            pravega.signal(signal.SIGCONT)  # a paused one stops too
        pravega.stop()
