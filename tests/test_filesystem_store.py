"""The filesystem store reading a library folder as people fill it by hand."""

from __future__ import annotations

import asyncio
import contextlib
import shutil

import pytest

from media.filesystem import FilesystemStore
from media.store import NotFound
from tests.conftest import make_config


async def collect(store, video, start, end, chunk_size):
    async with contextlib.aclosing(store.read(video, start, end, chunk_size)) as chunks:
        return b"".join([bytes(c) async for c in chunks])


@pytest.mark.gen_test
async def test_library_layout(tmp_path, media_dir):
    folder = tmp_path / "library"
    folder.mkdir()
    shutil.copy(media_dir / "clip.mp4", folder / "film.mp4")
    shutil.copy(media_dir / "clip.en.srt", folder / "film.srt")
    shutil.copy(media_dir / "clip.fr.srt", folder / "film.pt-BR.srt")
    (folder / "film.json").write_text('{"name": "A Film", "poster": "https://example.org/p.jpg"}')
    shutil.copy(media_dir / "clip.webm", folder / "-bad-id.webm")
    shutil.copy(media_dir / "clip.webm", folder / ".film2.webm.part")
    (folder / "notes.txt").write_text("not a video")
    (folder / "broken.json").write_text("{nope")
    shutil.copy(media_dir / "clip.webm", folder / "broken.webm")
    store = FilesystemStore(make_config(tmp_path).storage)
    await store.start()
    try:
        videos = store.videos()
        assert sorted(videos) == ["broken", "film"]
        film = videos["film"]
        assert film.name == "A Film" and film.poster_url == "https://example.org/p.jpg" and not film.has_poster
        assert [(t.lang, t.label, t.format) for t in film.captions] == [("en", "English", "srt"), ("pt-BR", "Português", "srt")]
        assert film.duration_seconds == pytest.approx(4.0, abs=0.2)
        assert videos["broken"].name == "broken"  # unreadable metadata is ignored, not fatal
        data = (folder / "film.mp4").read_bytes()
        assert await collect(store, film, 100, 5000, 1000) == data[100:5000]
        source, version = await store.caption_source(film, "pt-BR")
        assert source == (media_dir / "clip.fr.srt").read_bytes() and version
        with pytest.raises(NotFound):
            await store.caption_source(film, "de")
    finally:
        await store.close()


@pytest.mark.gen_test(timeout=20)
async def test_changes_are_noticed_and_heard(tmp_path, media_dir):
    folder = tmp_path / "library"
    folder.mkdir()
    store = FilesystemStore(make_config(tmp_path).storage)
    changes = []
    store.add_listener(lambda: changes.append(sorted(store.videos())))
    await store.start()
    try:
        shutil.copy(media_dir / "clip.mp4", folder / "new.mp4")
        for _ in range(50):
            if changes:
                break
            await asyncio.sleep(0.1)
        assert changes == [["new"]]
        (folder / "new.mp4").unlink()
        for _ in range(50):
            if len(changes) == 2:
                break
            await asyncio.sleep(0.1)
        assert changes == [["new"], []]
    finally:
        await store.close()


@pytest.mark.gen_test
async def test_a_file_removed_while_listed_is_a_clean_404(tmp_path, media_dir):
    folder = tmp_path / "library"
    folder.mkdir()
    shutil.copy(media_dir / "clip.mp4", folder / "gone.mp4")
    store = FilesystemStore(make_config(tmp_path, storage={"scan_interval": 60}).storage)
    await store.start()
    try:
        video = store.get("gone")
        (folder / "gone.mp4").unlink()
        with pytest.raises(NotFound):
            await collect(store, video, 0, 10, 10)
    finally:
        await store.close()
