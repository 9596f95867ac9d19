"""Files turned into text a model can read: text-like files in any common encoding, and PDFs.

What is text-like is decided by MIME type and file name together, since platforms often say
``application/octet-stream`` for a ``.py`` or ``.log`` file. The encoding is UTF-8 when the bytes
decode as UTF-8 (a BOM is dropped); otherwise charset-normalizer picks the legacy encoding that fits
(cp1252, latin-1, Shift_JIS, GB18030...), and bytes it cannot place are a binary file, not text.

PDFs are read with pypdf. A PDF whose pages give no text is usually a scan (pictures of pages): that
is told apart from an unreadable file, because the user can do something about it (send the pages
as images). Office formats and anything else are refused with the list of what is supported.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import PurePosixPath

from charset_normalizer import from_bytes

TEXT_SUFFIXES = frozenset(
    """
    txt text md markdown rst org adoc tex log csv tsv json jsonl ndjson yaml yml toml ini cfg conf env
    properties xml html htm svg sql graphql proto
    py pyi ipynb js mjs cjs ts tsx jsx vue svelte css scss sass less java kt kts scala groovy gradle
    c h cc cpp cxx hpp hh cs go rs swift m mm rb php pl pm lua r jl dart ex exs erl hrl hs ml mli
    clj cljs elm fs fsx nim zig v sol sh bash zsh fish ps1 bat cmd makefile mk cmake dockerfile tf hcl
    diff patch
    """.split()
)
"""File name endings read as text, whatever MIME type the platform gives."""
TEXT_MIME_TYPES = frozenset(
    {
        "application/json",
        "application/xml",
        "application/x-yaml",
        "application/yaml",
        "application/toml",
        "application/sql",
        "application/javascript",
        "application/x-sh",
        "application/x-python",
        "application/x-ndjson",
    }
)
PDF_MIME_TYPE = "application/pdf"
SUPPORTED = "text files (txt, md, csv, json, source code...) and PDFs"
"""For the user's answer to an unsupported file."""


class DocumentError(Exception):
    """A file that gives no text; ``kind`` keys its user-facing text."""

    kind = "document_unreadable"


class UnsupportedDocument(DocumentError):
    """Neither text-like nor a PDF (a .docx, a .zip, a video...)."""

    kind = "document_unsupported"


class NoTextLayer(DocumentError):
    """A PDF whose pages hold no text, most likely scanned pages."""

    kind = "document_no_text"


class DocumentUnreadable(DocumentError):
    """A file of a supported type that cannot be read: a broken or encrypted PDF, binary bytes
    posing as text."""

    kind = "document_unreadable"


@dataclass(frozen=True, slots=True)
class DocumentText:
    text: str
    complete: bool
    """False when reading stopped at ``max_chars`` (the rest of the file was not read)."""


def is_pdf(name: str, mime_type: str) -> bool:
    return mime_type.lower() == PDF_MIME_TYPE or _suffix(name) == "pdf"


def is_text_like(name: str, mime_type: str) -> bool:
    mime = mime_type.lower().partition(";")[0].strip()
    base = PurePosixPath(name).name.lower()
    return (
        mime.startswith("text/")
        or mime in TEXT_MIME_TYPES
        or mime.endswith(("+json", "+xml"))
        or _suffix(name) in TEXT_SUFFIXES
        or base in TEXT_SUFFIXES  # Makefile, Dockerfile
    )


def is_supported(name: str, mime_type: str) -> bool:
    return is_pdf(name, mime_type) or is_text_like(name, mime_type)


def extract_text(data: bytes, *, name: str, mime_type: str, max_chars: int | None = None) -> DocumentText:
    """The text of a document, up to about ``max_chars`` characters (None: all of it).

    CPU-bound for PDFs: run it in a thread from async code. Raises a ``DocumentError``.
    """
    if is_pdf(name, mime_type):
        return _pdf_text(data, max_chars)
    if is_text_like(name, mime_type):
        text = decode_text(data)
        if max_chars is not None and len(text) > max_chars:
            return DocumentText(text[:max_chars], complete=False)
        return DocumentText(text, complete=True)
    raise UnsupportedDocument(f"{name or 'file'} ({mime_type or 'no type'}) is neither text nor PDF")


def decode_text(data: bytes) -> str:
    """UTF-8 when it is (without a BOM), else the legacy encoding charset-normalizer finds."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DocumentUnreadable("binary data (NUL bytes), not text")
    best = from_bytes(data).best()
    if best is None:
        raise DocumentUnreadable("no text encoding fits these bytes")
    return str(best)


def _pdf_text(data: bytes, max_chars: int | None) -> DocumentText:
    # pypdf is imported here: it is needed only when someone sends a PDF.
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentUnreadable("the PDF is password-protected")
        pages: list[str] = []
        length = 0
        complete = True
        for page in reader.pages:
            if max_chars is not None and length >= max_chars:
                complete = False
                break
            text = page.extract_text() or ""
            pages.append(text.strip())
            length += len(text)
    except DocumentError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError, NotImplementedError) as error:
        # pypdf raises its own errors for broken files, and plain ones from deep inside a parser.
        raise DocumentUnreadable(f"not a readable PDF ({type(error).__name__})") from None
    text = "\n\n".join(page for page in pages if page)
    if not text.strip():
        raise NoTextLayer(f"{len(reader.pages)} page(s) without text")
    if max_chars is not None and len(text) > max_chars:
        return DocumentText(text[:max_chars], complete=False)
    return DocumentText(text, complete=complete)


def _suffix(name: str) -> str:
    return PurePosixPath(name).suffix.lower().removeprefix(".")
