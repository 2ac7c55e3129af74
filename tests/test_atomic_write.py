"""atomic_write: a file is the old one or the whole new one, and a failed write leaves nothing behind."""

from __future__ import annotations

import os

import pytest

import atomic_write


def test_the_new_content_appears_only_once_the_block_ends(tmp_path):
    path = str(tmp_path / "record.json")
    atomic_write.write(path, "old")
    with atomic_write.staged(path) as part:
        with open(part, "w") as f:
            f.write("new")
        assert open(path).read() == "old"
        name = os.path.basename(part)
        assert name.startswith(".record.json.") and name.endswith(".part")  # hidden from scans
    assert open(path).read() == "new"
    assert os.listdir(tmp_path) == ["record.json"]


def test_a_failed_write_removes_what_it_staged_and_keeps_the_old_file(tmp_path):
    path = str(tmp_path / "clip.mp4")
    atomic_write.write(path, b"old", durable=True)
    with pytest.raises(RuntimeError), atomic_write.staged(path) as part:
        with open(part, "wb") as f:
            f.write(b"half")
        raise RuntimeError("the copy broke")
    assert open(path, "rb").read() == b"old"
    assert os.listdir(tmp_path) == ["clip.mp4"]


def test_writers_in_parallel_stage_under_names_of_their_own():
    assert len({atomic_write.staged_name("/library/alpha.json") for _ in range(100)}) == 100


def test_a_staged_name_the_caller_gives_is_the_one_used(tmp_path):
    path = str(tmp_path / "v.have.json")
    with atomic_write.staged(path, path + ".part") as part:
        assert part == path + ".part"
        open(part, "w").close()
    assert os.listdir(tmp_path) == ["v.have.json"]
