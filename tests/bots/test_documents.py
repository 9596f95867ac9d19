"""Documents as text: encodings, PDFs with and without text, what is refused."""

from __future__ import annotations

import pytest

from bots.documents import (
    DocumentUnreadable,
    NoTextLayer,
    UnsupportedDocument,
    extract_text,
    is_supported,
)
from tests.kit.media import pdf, photo


def test_utf8_text_is_read_and_a_bom_dropped() -> None:
    assert extract_text("\ufeffnaïve café\n".encode(), name="notes.txt", mime_type="text/plain").text == "naïve café\n"


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("Der Müller aß Äpfel, öfter süße Brötchen, und übte täglich große Lieder für Säle. " * 4, "cp1252"),
        ("Привет, как дела? Это проверка кодировки для старых файлов из Windows. " * 4, "cp1251"),
        ("今日は良い天気ですね。古いファイルの文字コードを確かめます。" * 4, "shift_jis"),
    ],
)
def test_a_legacy_encoding_is_detected(text: str, encoding: str) -> None:
    assert extract_text(text.encode(encoding), name="old.csv", mime_type="text/csv").text == text


def test_source_code_sent_as_octet_stream_is_text() -> None:
    code = b"def main() -> None:\n    print('hi')\n"
    assert extract_text(code, name="main.py", mime_type="application/octet-stream").text == code.decode()
    assert is_supported("Makefile", "") and is_supported("data.json", "application/json")


def test_binary_bytes_named_txt_are_unreadable() -> None:
    with pytest.raises(DocumentUnreadable):
        extract_text(b"\x00\x01\x02\xff\xfe\x00" * 100, name="x.txt", mime_type="text/plain")


def test_a_long_text_is_cut_at_max_chars_and_says_so() -> None:
    read = extract_text(b"a" * 100, name="a.txt", mime_type="text/plain", max_chars=10)
    assert (read.text, read.complete) == ("a" * 10, False)


def test_a_pdfs_pages_become_text() -> None:
    read = extract_text(pdf("First page", "Second page"), name="report.pdf", mime_type="application/pdf")
    assert read.complete
    assert read.text == "First page\n\nSecond page"


def test_a_pdf_without_text_is_told_apart() -> None:
    with pytest.raises(NoTextLayer):
        extract_text(pdf("", ""), name="scan.pdf", mime_type="application/pdf")


def test_a_broken_pdf_is_unreadable() -> None:
    with pytest.raises(DocumentUnreadable):
        extract_text(b"%PDF-1.4\n garbage", name="broken.pdf", mime_type="application/pdf")


@pytest.mark.parametrize(
    ("name", "mime_type"),
    [
        ("letter.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
        ("archive.zip", "application/zip"),
        ("photo.bin", "application/octet-stream"),
    ],
)
def test_other_formats_are_unsupported(name: str, mime_type: str) -> None:
    assert not is_supported(name, mime_type)
    with pytest.raises(UnsupportedDocument):
        extract_text(photo(), name=name, mime_type=mime_type)
