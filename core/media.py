"""The media step of a turn: the pictures, voice notes and files of queued messages made into what
the model gets (design section 8).

It runs in two places. Before a prompt is queued, ``refusal`` checks what the platform said about
its files (sizes, how many pictures) without downloading anything. When the turn is answered,
``read`` downloads each file (the access and trigger checks are long past, so a denied user's file is
never touched), scales pictures, transcribes audio and reads documents. A message with a file that
cannot be used is answered with a short notice saying which and why, and is left out of the turn:
nothing of it reaches the model or the session.

The fetches of a live message are the adapter's own (kept here by message until its turn); after a
restart the queued records are fetched again through the ``Refetch`` its adapter supplied.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from bots.audio import SPEECH_MIME_TYPE, AudioClient, AudioUnsupported
from bots.audio_settings import Speak
from bots.documents import DocumentError, NoTextLayer, UnsupportedDocument, extract_text, is_supported
from bots.errors import ModelError
from bots.images import ImageUnreadable, image_tokens, prepare_image
from bots.model import ModelCard, ModelCatalog
from core import texts
from core.channel import ReplyChannel, VoiceChannel
from core.events import Attachment, AttachmentError, AttachmentKind, AttachmentTooLarge, Refetch
from core.media_settings import MediaSettings
from core.render import send_text
from core.store import QueuedMessage, StoredImage
from core.tokens import TokenCounter

log = logging.getLogger("chatbridge.media")

LIVE_KEPT = 1024
"""Live messages whose fetches are kept until their turn; beyond that the oldest are refetched."""
CHARS_PER_TOKEN_READ = 8
"""A document is read up to this many characters per token of ``max_document_tokens`` (then cut
exactly by the token counter): enough for any text, and a limit on what a huge file costs to read."""


class MediaRefused(Exception):
    """A file of a message that cannot be used; the message is the user's answer."""


@dataclass(slots=True)
class MediaTurn:
    """What a turn's queued messages come to: the user's text (transcripts and documents in it), the
    pictures, the notices for messages left out, and notes to put under the answer."""

    text: str
    images: tuple[StoredImage, ...] = ()
    refusals: list[str] = field(default_factory=list)
    footnotes: list[str] = field(default_factory=list)
    spoken: bool = False
    """A voice note or audio file was among them (``audio.speak: when_spoken_to``)."""

    @property
    def empty(self) -> bool:
        """Every message was left out: there is nothing to answer."""
        return not self.text and not self.images


@dataclass(slots=True)
class _Read:
    text: str
    images: list[StoredImage] = field(default_factory=list)
    footnotes: list[str] = field(default_factory=list)
    spoken: bool = False


class Media:
    def __init__(
        self,
        settings: MediaSettings,
        tokens: TokenCounter,
        models: ModelCatalog,
        audio: AudioClient | None = None,
        speak: Speak = Speak.NEVER,
    ) -> None:
        self._settings = settings
        self._speak = speak
        self._tokens = tokens
        self._models = models
        self._audio = audio
        self._live: dict[str, tuple[Attachment, ...]] = {}
        self._refetch: dict[str, Refetch] = {}

    @property
    def keep_images_turns(self) -> int:
        return self._settings.keep_images_turns

    def can_refetch(self, platform: str, refetch: Refetch) -> None:
        self._refetch[platform] = refetch

    def refusal(self, attachments: Sequence[Attachment]) -> str | None:
        """What is wrong with these files by the platform's own figures, before any download."""
        media = self._settings
        images = [a for a in attachments if a.kind is AttachmentKind.IMAGE]
        if len(images) > media.max_images_per_message:
            return texts.TOO_MANY_IMAGES.format(count=len(images), limit=media.max_images_per_message)
        for attachment in attachments:
            limit = self._limit(attachment)
            if attachment.size is not None and attachment.size > limit:
                return texts.too_large(image=attachment.kind is AttachmentKind.IMAGE, size=attachment.size, limit=limit)
        return None

    def remember(self, message_key: str, attachments: Sequence[Attachment]) -> None:
        """The live fetches of a message just queued, for its turn in this process."""
        if attachments:
            self._live[message_key] = tuple(attachments)
            while len(self._live) > LIVE_KEPT:
                del self._live[next(iter(self._live))]

    async def read(self, queued: Sequence[QueuedMessage], card: ModelCard) -> MediaTurn:
        """The turn of ``queued``; a message whose file cannot be used is left out, with a notice."""
        if not any(item.attachments for item in queued):
            return MediaTurn("\n".join(item.text for item in queued))
        kept: list[_Read] = []
        refusals: list[str] = []
        for item in queued:
            live = self._live.pop(item.message_key, None)
            if not item.attachments:
                kept.append(_Read(item.text))
                continue
            try:
                kept.append(await self._read(item, live or self._rebuilt(item), card))
            except MediaRefused as refused:
                refusals.append(str(refused))
        return MediaTurn(
            "\n".join(read.text for read in kept if read.text),
            tuple(image for read in kept for image in read.images),
            refusals,
            [note for read in kept for note in read.footnotes],
            any(read.spoken for read in kept),
        )

    async def speak(self, channel: ReplyChannel, text: str, *, spoken: bool) -> None:
        """The answer also as speech, as ``audio.speak`` says: always, or when the question was
        audio. A failure to speak is said in one line; the text answer is already out."""
        wanted = self._speak is Speak.ALWAYS or (self._speak is Speak.WHEN_SPOKEN_TO and spoken)
        if not wanted or self._audio is None or not isinstance(channel, VoiceChannel):
            return
        try:
            speech = await self._audio.speak(text)
        except ModelError as error:
            log.warning("could not read an answer aloud: %s: %s", type(error).__name__, error.detail)
            await send_text(channel, texts.SPEECH_FAILED)
            return
        try:
            await channel.send_voice(speech, SPEECH_MIME_TYPE)
        except Exception as error:  # noqa: BLE001 - the platform's refusal; the text answer stands
            log.warning("the platform did not take a spoken answer: %s", type(error).__name__)

    def _rebuilt(self, item: QueuedMessage) -> tuple[Attachment, ...]:
        refetch = self._refetch.get(item.platform)
        if refetch is None:
            raise MediaRefused(texts.DOWNLOAD_FAILED)
        return tuple(Attachment.from_record(record, refetch(str(record["source"]))) for record in item.attachments)

    async def _read(self, item: QueuedMessage, attachments: Sequence[Attachment], card: ModelCard) -> _Read:
        refused = self.refusal(attachments)  # again: a record from before a restart is checked too
        if refused is not None:
            raise MediaRefused(refused)
        for attachment in attachments:  # what can be told without the bytes, before any download
            self._check_usable(attachment, card)
        read = _Read(item.text)
        for attachment in attachments:
            data = await self._fetch(attachment)
            match attachment.kind:
                case AttachmentKind.IMAGE:
                    read.images.append(await self._image(data))
                case AttachmentKind.AUDIO:
                    read.text = _joined(read.text, await self._transcript(attachment, data))
                    read.spoken = True
                case AttachmentKind.DOCUMENT:
                    text, cut = await self._document(attachment, data)
                    read.text = _joined(read.text, text)
                    if cut is not None:
                        read.footnotes.append(cut)
        return read

    def _check_usable(self, attachment: Attachment, card: ModelCard) -> None:
        match attachment.kind:
            case AttachmentKind.IMAGE if not card.vision:
                seeing = [name for name in self._models.names if self._models.card(name).vision]
                raise MediaRefused(texts.cannot_see(card.name, seeing))
            case AttachmentKind.AUDIO if self._audio is None:
                raise MediaRefused(texts.AUDIO_UNSUPPORTED)
            case AttachmentKind.DOCUMENT if not is_supported(attachment.name, attachment.mime_type):
                raise MediaRefused(texts.UNSUPPORTED_FILE.format(name=attachment.name or "that file"))

    def _limit(self, attachment: Attachment) -> int:
        image = attachment.kind is AttachmentKind.IMAGE
        return self._settings.max_image_bytes if image else self._settings.max_file_bytes

    async def _fetch(self, attachment: Attachment) -> bytes:
        limit = self._limit(attachment)
        try:
            return await attachment.fetch(limit)
        except AttachmentTooLarge as error:
            image = attachment.kind is AttachmentKind.IMAGE
            raise MediaRefused(texts.too_large(image=image, size=error.size, limit=limit)) from None
        except AttachmentError as error:
            log.warning("could not download a %s: %s", attachment.kind, error)
            raise MediaRefused(texts.ATTACHMENT_ERRORS[error.kind]) from None

    async def _image(self, data: bytes) -> StoredImage:
        try:
            image = await asyncio.to_thread(prepare_image, data, max_side=self._settings.image_max_side_px)
        except ImageUnreadable as error:
            log.info("an unreadable picture: %s", error)
            raise MediaRefused(texts.IMAGE_UNREADABLE) from None
        return StoredImage(image.mime_type, image.data, image_tokens(image.width, image.height))

    async def _transcript(self, attachment: Attachment, data: bytes) -> str:
        assert self._audio is not None  # checked before the download
        try:
            return await self._audio.transcribe(data, file_name=attachment.name, mime_type=attachment.mime_type)
        except AudioUnsupported:
            raise MediaRefused(texts.AUDIO_UNSUPPORTED) from None
        except ModelError as error:
            log.warning("transcription failed: %s: %s", type(error).__name__, error.detail)
            raise MediaRefused(texts.TRANSCRIPTION_FAILED) from None

    async def _document(self, attachment: Attachment, data: bytes) -> tuple[str, str | None]:
        """The document's text headed by its name, and the note to the user when it was cut."""
        limit = self._settings.max_document_tokens
        name = attachment.name or "the file"
        try:
            document = await asyncio.to_thread(
                extract_text,
                data,
                name=attachment.name,
                mime_type=attachment.mime_type,
                max_chars=limit * CHARS_PER_TOKEN_READ,
            )
        except NoTextLayer:
            raise MediaRefused(texts.PDF_NO_TEXT) from None
        except UnsupportedDocument:
            raise MediaRefused(texts.UNSUPPORTED_FILE.format(name=name)) from None
        except DocumentError as error:
            log.info("an unreadable document: %s", error)
            raise MediaRefused(texts.DOCUMENT_UNREADABLE.format(name=name)) from None
        text, whole = self._cut(document.text, limit)
        if whole and document.complete:
            return f"{name}:\n{text}", None
        said = texts.DOCUMENT_CUT_FOR_MODEL.format(name=name, limit=limit)
        return f"{name}:\n{text}\n{said}", texts.DOCUMENT_CUT.format(name=name, limit=limit)

    def _cut(self, text: str, limit: int) -> tuple[str, bool]:
        """The start of ``text`` that fits in ``limit`` tokens, and whether that is all of it."""
        count = self._tokens.count(text)
        if count <= limit:
            return text, True
        end = len(text) * limit // count
        while end > 0 and self._tokens.count(text[:end]) > limit:
            end = end * 9 // 10
        return text[:end], False


def _joined(first: str, second: str) -> str:
    return f"{first}\n{second}" if first and second else first or second
