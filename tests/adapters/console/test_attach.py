"""``/attach PATH [question]`` in ``chatbridge chat`` on pipes: a real process, the fake model."""

from __future__ import annotations

from pathlib import Path

from core import texts
from tests.chatbridge.test_cli import _env, _run
from tests.fakes.fake_model import FakeModel
from tests.kit.media import OGG_VOICE, photo
from tests.kit.media_answers import decoded, part_kinds, user_parts


async def test_attached_pictures_documents_and_voice_are_answered_like_a_platforms(
    tmp_path: Path, fake_model: FakeModel
) -> None:
    (tmp_path / "my photo.jpg").write_bytes(photo(400, 300))
    (tmp_path / "notes.md").write_text("# Plan\nShip on Friday\n")
    (tmp_path / "memo.ogg").write_bytes(OGG_VOICE)
    fake_model.transcripts.append("what is on my list?")
    env = _env(fake_model, CHATBRIDGE_MODEL__VISION="true", CHATBRIDGE_MEDIA__IMAGE_MAX_SIDE_PX="200")
    lines = [
        '/attach "my photo.jpg" what is this?',
        "/attach notes.md",
        "/attach memo.ogg",
        "/attach missing.txt hello",
        "/attach",
        "and the photo again?",
    ]
    code, out, err = await _run(["chat"], tmp_path, env, "\n".join(lines) + "\n")
    assert code == 0, err
    shown = out.splitlines()
    assert shown[0] == "echo: what is this?"
    assert shown[1].startswith("echo: notes.md:")
    assert "echo: what is on my list?" in shown
    assert texts.ATTACH_NO_FILE.format(path="missing.txt") in shown and texts.ATTACH_USAGE in shown
    first = fake_model.requests[0]
    assert decoded(user_parts(first)[1]).size == (200, 150)
    assert "Ship on Friday" in fake_model.user_texts()[1]
    assert part_kinds(fake_model.requests[-1], 0) == ["text", "image_url"], "the stored picture was not sent again"
