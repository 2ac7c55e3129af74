"""``binge-ingest``: adds a video file to the store that config.yaml names.

    python -m media.ingest FILE [--id ID] [--name NAME]
                           [--captions FILE [--lang LANG]]... [--config PATH]

The video's duration and container are read from the media itself and a
poster is taken from a tenth of the way in. The id defaults to the file's
name without its extension, made safe (``My Trip (2).mp4`` -> ``My-Trip-2``);
the name defaults to that file name as it is. Each ``--captions`` file
(.srt or .vtt) is in the language of the ``--lang`` right after it, else the
one its name ends in (``movie.fr.srt`` -> ``fr``), else ``en``. Adding an id
that exists replaces that video.

Exit status: 0 when the video was added; 2, with one line on stderr, for a
bad file, option or configuration; 1 when the store failed to take it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import unicodedata
from typing import Iterable

import backends
from media.probe import human_duration, poster_jpeg, probe
from media.progress import ByteProgress
from media.store import CAPTION_FORMATS, LANGUAGE_TAG, InvalidInput, NewVideo, StoreError, check_video_id
from settings import ConfigError, load_settings

PROG = "binge-ingest"


def default_video_id(path: str) -> str:
    """The id a file gets without ``--id``: its stem in ASCII, each run of other characters made one '-'."""
    stem = os.path.splitext(os.path.basename(path))[0]
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    video_id = re.sub(r"[^A-Za-z0-9._-]+", "-", ascii_stem).strip("-._")[:200].rstrip("-._")
    if not video_id:
        raise InvalidInput(f"{os.path.basename(path)}: cannot make an id from this file name; give one with --id")
    return check_video_id(video_id)


def caption_language(path: str) -> str:
    """The language a caption file's name ends in (``x.fr.srt``, ``x.pt-BR.vtt``), else ``en``."""
    parts = os.path.basename(path).split(".")
    return parts[-2] if len(parts) >= 3 and LANGUAGE_TAG.match(parts[-2]) else "en"


def read_captions(path: str) -> tuple[bytes, str]:
    """The bytes of an .srt or .vtt file and its format; ``InvalidInput`` for anything else."""
    fmt = os.path.splitext(path)[1].lower().lstrip(".")
    if fmt not in CAPTION_FORMATS:
        raise InvalidInput(f"{os.path.basename(path)}: captions must be an .srt or .vtt file")
    with open(path, "rb") as f:
        data = f.read()
    # Both formats time every cue with "-->"; a file without one holds no captions.
    if b"-->" not in data:
        raise InvalidInput(f"{os.path.basename(path)}: no timed captions in this {fmt} file")
    return data, fmt


def new_video(
    path: str,
    video_id: str | None = None,
    name: str | None = None,
    captions: Iterable[tuple[str, str | None]] = (),
) -> NewVideo:
    """Probes ``path`` and gathers what a store needs to add it.

    ``captions`` holds ``(file, lang)`` pairs; a ``None`` lang comes from the
    file's name. Raises ``InvalidInput`` for a file that is not a playable
    video, a bad id or bad captions, ``OSError`` for a file that cannot be read.
    """
    video_id = check_video_id(video_id) if video_id is not None else default_video_id(path)
    info = probe(path)
    tracks: dict[str, tuple[bytes, str]] = {}
    for caption_path, lang in captions:
        lang = lang or caption_language(caption_path)
        if not LANGUAGE_TAG.match(lang):
            raise InvalidInput(f"invalid language {lang!r}: use a tag such as en, fr or pt-BR")
        if lang in tracks:
            raise InvalidInput(f"two caption files for language {lang!r}; set --lang after each --captions")
        tracks[lang] = read_captions(caption_path)
    details = {"container": info.container, "width": info.width, "height": info.height,
               "videoCodec": info.video_codec, "audioCodec": info.audio_codec}
    return NewVideo(
        id=video_id,
        source_path=path,
        name=name or os.path.splitext(os.path.basename(path))[0],
        mime_type=info.mime_type,
        duration_seconds=info.duration_seconds,
        captions=tracks,
        poster=poster_jpeg(path),
        metadata={key: value for key, value in details.items() if value is not None},
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as e:
        return _fail(f"configuration: {e}", 2)
    if not os.path.isfile(args.file):
        return _fail(f"{args.file}: {'not a file' if os.path.exists(args.file) else 'no such file'}", 2)
    try:
        item = new_video(args.file, args.id, args.name, [tuple(pair) for pair in args.captions])
    except InvalidInput as e:
        return _fail(str(e), 2)
    except OSError as e:
        return _fail(f"{e.filename or args.file}: {e.strerror}", 2)

    where = backends.location(settings)
    progress = ByteProgress(os.path.getsize(args.file), f"Adding {os.path.basename(args.file)}")
    try:
        backends.ingest(settings, item, progress)
    except KeyboardInterrupt:
        progress.abandon()
        return _fail("interrupted before the video was added", 130)
    except InvalidInput as e:
        progress.abandon()
        return _fail(str(e), 2)
    except (StoreError, ImportError) as e:
        progress.abandon()
        return _fail(f"the {settings.storage.backend} store failed: {e}", 1)
    except OSError as e:
        progress.abandon()
        return _fail(f"cannot write {e.filename or where}: {e.strerror}", 1)
    progress.finish()
    captions = f", captions {', '.join(item.captions)}" if item.captions else ""
    print(f"added {item.id!r} ({item.name}, {human_duration(item.duration_seconds)}, "
          f"{item.metadata['container']}{captions}) to {where}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Add a video file to the Binge+ store.")
    parser.add_argument("file", metavar="FILE", help="the video: mp4, m4v, mov, webm or mkv")
    parser.add_argument("--id", help="the video's id (default: from the file name)")
    parser.add_argument("--name", help="the title the catalog shows (default: the file name)")
    parser.add_argument("--captions", metavar="FILE", action=_Captions, default=[],
                        help="an .srt or .vtt caption file; may repeat")
    parser.add_argument("--lang", action=_Lang, help="the language of the --captions just before")
    parser.add_argument("--config", metavar="PATH", help="config.yaml to use (default: the server's)")
    return parser


class _Captions(argparse.Action):
    """Collects ``[file, lang]`` pairs, so a later ``--lang`` can name the language of one."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, [*getattr(namespace, self.dest), [values, None]])


class _Lang(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        if not namespace.captions or namespace.captions[-1][1] is not None:
            parser.error("--lang must follow the --captions it is for")
        namespace.captions[-1][1] = values


def _fail(message: str, status: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
