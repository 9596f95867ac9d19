"""The ``audio`` row of ``chatbridge check``: does the audio server have the endpoints voice needs?

Only ever a warning: ``run`` starts without them, and a voice message then gets one clear answer
(``core.texts.AUDIO_UNSUPPORTED``) instead of a transcript.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.kit import connection_trouble, unreachable
from bots.audio import AudioClient
from bots.audio_settings import Speak
from bots.errors import ModelError

if TYPE_CHECKING:
    from chatbridge.check import Caveat
    from chatbridge.config import Config


async def check_audio(config: Config) -> str | Caveat:
    from chatbridge.check import Caveat  # check imports this module to call it

    client = AudioClient(config.audio, config.model)
    where = f"{client.url_key} {client.base_url}"
    try:
        checked = await client.check()
    except ModelError as error:
        if connection_trouble(error) is not None:
            return Caveat(f"{unreachable(client.url_key, client.base_url, error)}; voice messages cannot be answered")
        return Caveat(f"{where}: {error.detail}; voice messages cannot be answered")
    finally:
        await client.aclose()
    speaks = config.audio.speak is not Speak.NEVER
    missing = [name for name, there in (("/audio/transcriptions", checked.transcriptions),) if not there]
    if speaks and not checked.speech:
        missing.append("/audio/speech")
    if not missing:
        return f"{where} has /audio/transcriptions" + (" and /audio/speech" if speaks else "")
    hint = (
        "set audio.base_url to a server that has them" if client.url_key == "model.base_url" else "check audio.base_url"
    )
    consequence = (
        "voice messages get a short answer instead of a transcript"
        if not checked.transcriptions
        else "answers are not spoken (audio.speak)"
    )
    return Caveat(f"{where} has no {' or '.join(missing)}: {consequence}; {hint}")
