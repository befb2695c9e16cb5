"""The asciicast writer: UTF-8 split across reads, the size cap, and what input recording hides."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from sandbox_ssh._session.recording import Recorder, RecordingPolicy


def _record(tmp_path: Path, policy: RecordingPolicy, feed: list[tuple[str, bytes]]) -> list[Any]:
    async def run() -> Path:
        recorder = Recorder(policy, "session/../x", 80, 24, {"user": "dev"})
        for kind, data in feed:
            recorder.output(data) if kind == "o" else recorder.input(data)
        recorder.close()
        return recorder.path

    path = asyncio.run(run())
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_character_split_across_reads_is_written_whole(tmp_path: Path) -> None:
    snowman = "☃".encode()
    lines = _record(
        tmp_path, RecordingPolicy(tmp_path), [("o", b"a" + snowman[:1]), ("o", snowman[1:])]
    )
    assert "".join(event[2] for event in lines[1:]) == "a☃"


def test_the_session_id_cannot_leave_the_directory(tmp_path: Path) -> None:
    _record(tmp_path, RecordingPolicy(tmp_path), [("o", b"x")])
    (folder,) = tmp_path.iterdir()
    assert folder.name == "session_.._x"


def test_input_only_when_asked_and_nothing_past_the_cap(tmp_path: Path) -> None:
    feed = [("i", b"secret"), *[("o", b"y" * 100)] * 50]
    lines = _record(tmp_path / "a", RecordingPolicy(tmp_path / "a", max_bytes=1000), feed)
    assert not [event for event in lines[1:] if event[1] == "i"]
    assert lines[-1][1] == "m"
    (cast,) = (tmp_path / "a").glob("*/*.cast")
    assert cast.stat().st_size <= 1000
    with_input = _record(tmp_path / "b", RecordingPolicy(tmp_path / "b", record_input=True), feed)
    assert with_input[1][1:] == ["i", "secret"]
