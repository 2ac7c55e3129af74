"""Media tooling: probing, posters, generated sample media and the ingest command."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
from fractions import Fraction

import av
import pytest
import ujson

import backends
from media import ingest
from media.filesystem_ingest import write_into_folder
from media.ingest import caption_language, default_video_id, new_video
from media.probe import human_duration, poster_jpeg, probe
from media.progress import ByteProgress
from media.sample import cached_video, make_video, populate_library, write_srt
from media.store import InvalidInput
from settings import settings_from_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media-tools")
    paths = {
        "mp4": make_video(str(folder / "clip.mp4"), seconds=2.0, container="mp4"),
        "webm": make_video(str(folder / "clip.webm"), seconds=2.0, container="webm"),
    }
    paths["fr"] = write_srt(str(folder / "clip.fr.srt"), [(0.0, 1.0, "Bonjour"), (1.0, 1.9, "Au revoir")])
    paths["srt"] = write_srt(str(folder / "clip.srt"), [(0.0, 1.9, "Hello")])
    return paths


# --- probe -----------------------------------------------------------------


@pytest.mark.parametrize(
    "container, mime_type, video_codec, audio_codec",
    [("mp4", "video/mp4", "h264", "aac"), ("webm", "video/webm", "vp9", "opus")],
)
def test_probe_reads_duration_container_and_codecs(media, container, mime_type, video_codec, audio_codec):
    info = probe(media[container])
    assert info.duration_seconds == pytest.approx(2.0, abs=0.2)
    assert (info.container, info.mime_type) == (container, mime_type)
    assert (info.video_codec, info.audio_codec) == (video_codec, audio_codec)
    assert (info.width, info.height) == (320, 240)


@pytest.mark.parametrize("container, mime_type", [("mkv", "video/x-matroska"), ("mov", "video/quicktime"),
                                                  ("m4v", "video/mp4")])
def test_probe_tells_apart_containers_that_share_a_demuxer(tmp_path, container, mime_type):
    path = make_video(str(tmp_path / f"clip.{container}"), seconds=1.0, container=container)
    info = probe(path)
    assert (info.container, info.mime_type) == (container, mime_type)
    assert info.duration_seconds == pytest.approx(1.0, abs=0.2)


def test_probe_names_the_container_by_content_when_the_extension_is_wrong(tmp_path, media):
    misnamed = tmp_path / "really-webm.mkv.webm"
    misnamed.write_bytes(open(media["webm"], "rb").read())
    assert probe(str(misnamed)).container == "webm"
    h264_in_webm = make_video(str(tmp_path / "h264.webm"), seconds=1.0, container="mkv")
    assert probe(h264_in_webm).container == "mkv"
    qt = tmp_path / "movie"
    qt.write_bytes(open(make_video(str(tmp_path / "q.mov"), seconds=1.0, container="mov"), "rb").read())
    assert probe(str(qt)).container == "mov"


def test_probe_finds_the_duration_of_a_webm_that_has_none_in_its_header(tmp_path, media):
    live = _remux_unseekable(media["webm"], str(tmp_path / "live.webm"))
    with av.open(live) as container:
        assert container.duration is None
    info = probe(live)
    assert info.duration_seconds == pytest.approx(2.0, abs=0.2)
    assert poster_jpeg(live)[:2] == b"\xff\xd8"


def test_probe_rejects_files_that_are_not_playable_videos(tmp_path, media):
    text = tmp_path / "notes.txt"
    text.write_text("not a video\n" * 50)
    zeros = tmp_path / "zeros.mp4"
    zeros.write_bytes(b"\0" * 4096)
    empty = tmp_path / "empty.webm"
    empty.write_bytes(b"")
    picture = tmp_path / "picture.jpg"
    picture.write_bytes(poster_jpeg(media["mp4"]))
    for path, message in [(text, "text"), (zeros, "not a video"), (empty, "not a video"),
                          (picture, "not a video"), (_audio_only(str(tmp_path / "song.mp4")), "no video stream")]:
        with pytest.raises(InvalidInput, match=message):
            probe(str(path))


def test_probe_of_a_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        probe(str(tmp_path / "gone.mp4"))


# --- posters ---------------------------------------------------------------


@pytest.mark.parametrize("container", ["mp4", "webm"])
def test_poster_is_a_decodable_jpeg_of_a_real_frame(media, container):
    jpeg = poster_jpeg(media[container])
    assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
    frame = _decode_jpeg(jpeg)
    assert (frame.width, frame.height) == (320, 240)
    luma = bytes(frame.planes[0])
    assert max(luma) - min(luma) > 100, "the pattern has black and white; a blank frame would not"


def test_poster_is_scaled_down_to_max_width_keeping_the_aspect(media):
    frame = _decode_jpeg(poster_jpeg(media["mp4"], max_width=160))
    assert (frame.width, frame.height) == (160, 120)


def test_poster_frame_follows_at_fraction(media):
    early = bytes(_decode_jpeg(poster_jpeg(media["mp4"], at_fraction=0.1)).planes[0])
    late = bytes(_decode_jpeg(poster_jpeg(media["mp4"], at_fraction=0.9)).planes[0])
    assert early != late


def test_poster_of_a_rotated_video_is_upright(tmp_path):
    path = str(tmp_path / "portrait.mp4")
    with av.open(path, "w") as output:
        stream = output.add_stream("libx264", rate=24, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.set_display_rotation(90)
        for index in range(12):
            frame = av.VideoFrame(320, 240, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes([60 + index]) * plane.buffer_size)
            frame.pts = index
            output.mux(stream.encode(frame))
        output.mux(stream.encode())
    frame = _decode_jpeg(poster_jpeg(path))
    assert (frame.width, frame.height) == (240, 320)


# --- human_duration --------------------------------------------------------


@pytest.mark.parametrize(
    "seconds, text",
    [(None, "unknown"), (float("nan"), "unknown"), (-1.0, "unknown"), (0, "0 secs"), (1.0, "1 sec"),
     (45.2, "45 secs"), (59.4, "59 secs"), (59.6, "1 min"), (60, "1 min"), (89, "1 min"), (90, "2 mins"),
     (180.0, "3 mins"), (3569, "59 mins"), (3571, "1 hr"), (3600, "1 hr"), (3900, "1 hr 5 mins"),
     (3960, "1 hr 6 mins"), (3630, "1 hr 1 min"), (7200, "2 hrs"), (2 * 3600 + 65, "2 hrs 1 min")],
)
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text


# --- sample media ----------------------------------------------------------


def test_make_video_is_fast_seekable_and_streamable(tmp_path):
    # CPU time: the claim is about the work, which a busy machine's wall clock would blur.
    start = time.process_time()
    path = make_video(str(tmp_path / "four.mp4"), seconds=4.0)
    assert time.process_time() - start < 1.0, "4 s of 320x240 should take well under a second of CPU"
    with av.open(path) as container:
        video = container.streams.video[0]
        keyframes = [float(p.pts * p.time_base) for p in container.demux(video) if p.is_keyframe]
        assert video.codec_context.pix_fmt == "yuv420p"
        assert video.codec_context.profile in ("Constrained Baseline", "Baseline", "Main", "High")
    assert keyframes == pytest.approx([0.0, 1.0, 2.0, 3.0], abs=0.05)
    data = open(path, "rb").read()
    assert data.index(b"moov") < data.index(b"mdat"), "faststart puts the index before the media"


def test_make_video_webm_keyframes_every_second(media):
    with av.open(media["webm"]) as container:
        video = container.streams.video[0]
        keyframes = [float(p.pts * p.time_base) for p in container.demux(video) if p.is_keyframe]
    assert keyframes == pytest.approx([0.0, 1.0], abs=0.05)


def test_make_video_refuses_bad_arguments_and_leaves_no_file(tmp_path):
    for kwargs in [{"container": "avi"}, {"width": 321}, {"seconds": 0}]:
        with pytest.raises(ValueError):
            make_video(str(tmp_path / "bad.mp4"), **kwargs)
    assert os.listdir(tmp_path) == []


def test_cached_video_is_made_once():
    path = cached_video("webm", seconds=1.0)
    assert probe(path).container == "webm"
    stamp = os.stat(path).st_mtime_ns
    assert cached_video("webm", seconds=1.0) == path
    assert os.stat(path).st_mtime_ns == stamp


def test_write_srt(tmp_path):
    path = write_srt(str(tmp_path / "x.srt"), [(0.0, 1.5, "Héllo"), (61.25, 3723.0, "Two\nlines")])
    assert open(path, encoding="utf-8").read() == (
        "1\n00:00:00,000 --> 00:00:01,500\nHéllo\n\n2\n00:01:01,250 --> 01:02:03,000\nTwo\nlines\n"
    )


def test_populate_library_adds_captioned_samples_once(tmp_path):
    library = tmp_path / "library"
    assert populate_library(str(library), seconds=1.0) == ["sample", "sample-webm"]
    names = set(os.listdir(library))
    assert {"sample.mp4", "sample.en.srt", "sample.json", "sample.jpg",
            "sample-webm.webm", "sample-webm.fr.srt", "sample-webm.json", "sample-webm.jpg"} == names
    meta = ujson.loads((library / "sample.json").read_text())
    assert meta["durationSeconds"] == pytest.approx(1.0, abs=0.2) and meta["poster"] == "sample.jpg"
    assert populate_library(str(library), seconds=1.0) == []


def test_sample_command_fills_an_empty_library(tmp_path):
    result = _run("media.sample", "--library", str(tmp_path / "lib"), "--seconds", "1")
    assert result.returncode == 0, result.stderr
    assert "sample, sample-webm" in result.stdout
    again = _run("media.sample", "--library", str(tmp_path / "lib"), "--seconds", "1")
    assert again.returncode == 0 and "added none" in again.stderr


# --- ingest ----------------------------------------------------------------


@pytest.mark.parametrize(
    "file_name, video_id",
    [("clip.mp4", "clip"), ("My Trip (2).mp4", "My-Trip-2"), ("Café crème.webm", "Cafe-creme"),
     ("_hidden_.mov", "hidden"), ("v1.2.mkv", "v1.2")],
)
def test_default_video_id(file_name, video_id):
    assert default_video_id(f"/videos/{file_name}") == video_id


def test_default_video_id_needs_something_usable():
    with pytest.raises(InvalidInput, match="--id"):
        default_video_id("/videos/日本.mp4")


@pytest.mark.parametrize(
    "file_name, lang",
    [("movie.fr.srt", "fr"), ("movie.pt-BR.vtt", "pt-BR"), ("movie.srt", "en"), ("my.movie.srt", "en"),
     ("fr.srt", "en")],
)
def test_caption_language_comes_from_the_file_name(file_name, lang):
    assert caption_language(file_name) == lang


def test_new_video_rejects_two_captions_for_one_language(media):
    with pytest.raises(InvalidInput, match="two caption files"):
        new_video(media["mp4"], captions=[(media["srt"], None), (media["fr"], "en")])
    with pytest.raises(InvalidInput, match="invalid language"):
        new_video(media["mp4"], captions=[(media["srt"], "english!")])


def test_ingest_command_adds_the_video_with_captions_poster_and_metadata(tmp_path, media):
    library, config = _library(tmp_path)
    result = _run("media.ingest", media["mp4"], "--id", "alpha", "--name", "Alpha Clip",
                  "--captions", media["fr"], "--captions", media["srt"], "--config", config)
    assert result.returncode == 0, result.stderr
    assert "added 'alpha'" in result.stdout
    assert "MB/s" in result.stderr.splitlines()[-1], "a final progress line even without a terminal"
    assert sorted(os.listdir(library)) == ["alpha.en.srt", "alpha.fr.srt", "alpha.jpg", "alpha.json", "alpha.mp4"]
    assert (library / "alpha.mp4").read_bytes() == open(media["mp4"], "rb").read()
    assert (library / "alpha.fr.srt").read_bytes() == open(media["fr"], "rb").read()
    assert _decode_jpeg((library / "alpha.jpg").read_bytes()).width == 320
    meta = ujson.loads((library / "alpha.json").read_text())
    assert meta["name"] == "Alpha Clip" and meta["poster"] == "alpha.jpg"
    assert meta["durationSeconds"] == pytest.approx(2.0, abs=0.2)
    assert (meta["container"], meta["videoCodec"], meta["audioCodec"]) == ("mp4", "h264", "aac")


def test_ingested_video_is_what_the_filesystem_store_reads(tmp_path, media):
    from media.filesystem import FilesystemStore

    library, config = _library(tmp_path)
    assert _run("media.ingest", media["webm"], "--captions", media["fr"], "--lang", "de",
                "--config", config).returncode == 0
    store = FilesystemStore(_settings(tmp_path).storage)
    asyncio.run(store.rescan())
    record = store.get("clip")
    assert (record.name, record.mime_type, record.has_poster) == ("clip", "video/webm", True)
    assert record.duration_seconds == pytest.approx(2.0, abs=0.2)
    assert [t.lang for t in record.captions] == ["de"]


def test_ingest_again_replaces_the_video_cleanly(tmp_path, media):
    library, config = _library(tmp_path)
    first = _run("media.ingest", media["mp4"], "--id", "alpha", "--captions", media["fr"], "--config", config)
    assert first.returncode == 0, first.stderr
    second = _run("media.ingest", media["webm"], "--id", "alpha", "--name", "New", "--captions", media["srt"],
                  "--config", config)
    assert second.returncode == 0, second.stderr
    assert sorted(os.listdir(library)) == ["alpha.en.srt", "alpha.jpg", "alpha.json", "alpha.webm"]
    assert ujson.loads((library / "alpha.json").read_text())["name"] == "New"


def test_ingest_again_leaves_other_videos_with_a_longer_id_alone(tmp_path, media):
    library, _ = _library(tmp_path)
    item = new_video(media["mp4"], "clip.fr")
    write_into_folder(str(library), item, lambda done: None)
    write_into_folder(str(library), new_video(media["mp4"], "clip"), lambda done: None)
    write_into_folder(str(library), new_video(media["webm"], "clip"), lambda done: None)
    assert sorted(os.listdir(library)) == ["clip.fr.jpg", "clip.fr.json", "clip.fr.mp4",
                                           "clip.jpg", "clip.json", "clip.webm"]


@pytest.mark.parametrize("make_bad", ["text", "header-only", "cut-short", "missing"])
def test_ingest_command_rejects_a_bad_file_in_one_line(tmp_path, media, make_bad):
    library, config = _library(tmp_path)
    (library / "keep.txt").write_text("untouched")
    bad = tmp_path / "bad.mp4"
    if make_bad == "text":
        bad = tmp_path / "readme.txt"
        bad.write_text("hello\n" * 100)
    elif make_bad == "header-only":
        bad.write_bytes(open(media["webm"], "rb").read()[:300])
    elif make_bad == "cut-short":
        # The index is whole (faststart puts it first) but the frames are gone.
        bad.write_bytes(open(media["mp4"], "rb").read()[:3000])
    result = _run("media.ingest", str(bad), "--config", config)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("binge-ingest: error: ")
    assert os.listdir(library) == ["keep.txt"]


def test_ingest_command_reports_a_config_error_in_one_line(tmp_path, media):
    config = tmp_path / "config.yaml"
    config.write_text("storage:\n  backend: filesystem\n  library: nowhere\n")
    result = _run("media.ingest", media["mp4"], "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "storage.library" in result.stderr


def test_ingest_command_rejects_a_caption_file_that_is_not_one(tmp_path, media):
    library, config = _library(tmp_path)
    notes = tmp_path / "notes.srt"
    notes.write_text("just some text\n")
    for captions in (str(notes), config):
        result = _run("media.ingest", media["mp4"], "--captions", captions, "--config", config)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert os.listdir(library) == []


def test_ingest_command_refuses_lang_without_captions(tmp_path, media):
    _, config = _library(tmp_path)
    result = _run("media.ingest", media["mp4"], "--lang", "fr", "--config", config)
    assert result.returncode == 2 and "--lang must follow" in result.stderr


def test_ingest_command_reports_a_failing_store_in_one_line(tmp_path, media, monkeypatch, capsys):
    def disk_full(settings, item, progress):
        progress(1024)
        raise OSError(28, "No space left on device")

    _, config = _library(tmp_path)
    monkeypatch.setattr(backends, "ingest_into_library", disk_full)
    assert ingest.main([media["mp4"], "--config", config]) == 1
    library = tmp_path / "library"
    assert capsys.readouterr().err == f"binge-ingest: error: cannot write {library}: No space left on device\n"


def test_a_failed_copy_leaves_the_library_as_it_was(tmp_path, media):
    library, _ = _library(tmp_path)
    write_into_folder(str(library), new_video(media["mp4"], "alpha", "Old"), lambda done: None)
    before = {name: (library / name).read_bytes() for name in os.listdir(library)}

    def fail(done):
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_into_folder(str(library), new_video(media["webm"], "alpha", "New",
                                                  [(media["fr"], None)]), fail)
    assert {name: (library / name).read_bytes() for name in os.listdir(library)} == before


# --- progress --------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_redraws_at_most_ten_times_a_second_on_a_terminal():
    now = [100.0]
    out = _Terminal()
    progress = ByteProgress(10_000_000, "Copying x.mp4", stream=out, clock=lambda: now[0])
    for step in range(1, 11):
        now[0] += 0.02
        progress(step * 1_000_000)
    draws = out.getvalue().split("\r")[1:]
    assert len(draws) == 3, draws  # the first, one 0.1 s later, and the last
    assert "10.0/10.0 MB" in draws[-1] and "100%" in draws[-1] and "50.0 MB/s" in draws[-1]
    assert "[####################]" in draws[-1]
    progress.finish()
    assert out.getvalue().endswith("Copying x.mp4: 10.0 MB in 0.2 s (50.0 MB/s)\x1b[K\n")


def test_progress_writes_only_a_summary_when_not_on_a_terminal():
    now = [0.0]
    out = io.StringIO()
    progress = ByteProgress(2_000_000, "Copying x.mp4", stream=out, clock=lambda: now[0])
    for done in (1_000_000, 2_000_000):
        now[0] += 0.5
        progress(done)
    progress.finish()
    assert out.getvalue() == "Copying x.mp4: 2.0 MB in 1.0 s (2.0 MB/s)\n"


# --- helpers ---------------------------------------------------------------


def _settings(tmp_path):
    return settings_from_dict({"storage": {"backend": "filesystem", "library": str(tmp_path / "library"),
                                           "cache_dir": str(tmp_path / "cache")}})


def _library(tmp_path):
    library = tmp_path / "library"
    library.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(f"storage:\n  backend: filesystem\n  library: {library}\n  cache_dir: {tmp_path / 'cache'}\n")
    return library, str(config)


def _run(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def _decode_jpeg(data: bytes) -> av.VideoFrame:
    with av.open(io.BytesIO(data)) as container:
        return next(container.decode(video=0))


def _audio_only(path: str) -> str:
    with av.open(path, "w") as output:
        stream = output.add_stream("aac", rate=48000, layout="mono")
        frame = av.AudioFrame(format="s16", layout="mono", samples=4800)
        frame.planes[0].update(bytes(9600))
        frame.sample_rate, frame.pts, frame.time_base = 48000, 0, Fraction(1, 48000)
        output.mux(stream.encode(frame))
        output.mux(stream.encode())
    return path


class _Pipe:
    """A write-only file object; a muxer writing to it cannot go back to fill in a duration."""

    def __init__(self):
        self.data = bytearray()

    def write(self, data):
        self.data += data
        return len(data)


def _remux_unseekable(source: str, path: str) -> str:
    """``source`` rewritten as a live recorder writes WebM: no duration, no index."""
    pipe = _Pipe()
    with av.open(source) as src, av.open(pipe, "w", format="webm") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream_index]
                out.mux(packet)
    with open(path, "wb") as f:
        f.write(pipe.data)
    return path
