"""Tests for reading the raw SMS Spam Collection text file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pyro_spam.collection import read_collection
from pyro_spam.errors import DataError

GOOD = "ham\tOk lar... Joking wif u oni...\nspam\tFREE entry in 2 a wkly comp\nham\tSee you\tlater\n"


def write(tmp_path: Path, content: str | bytes, name: str = "SMSSpamCollection") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def test_good_file_parses(tmp_path: Path) -> None:
    """A well-formed file gives float32 0/1 labels and unicode texts in file order."""
    y, msg = read_collection(write(tmp_path, GOOD))
    assert y.dtype == np.float32 and y.tolist() == [0.0, 1.0, 0.0]
    assert msg.dtype.kind == "U"
    assert msg.tolist() == ["Ok lar... Joking wif u oni...", "FREE entry in 2 a wkly comp", "See you\tlater"]


def test_crlf_bom_no_trailing_newline_and_label_case(tmp_path: Path) -> None:
    """CRLF endings, a BOM, a missing final newline and 'SPAM' in capitals are all accepted."""
    content = "\ufeffham\tHi there\r\nSPAM\tWin £100 now\r\nham\tbye"
    y, msg = read_collection(write(tmp_path, content))
    assert y.tolist() == [0.0, 1.0, 0.0]
    assert msg.tolist() == ["Hi there", "Win £100 now", "bye"]


def test_unicode_line_separators_stay_inside_message(tmp_path: Path) -> None:
    """Characters like \\x0b or \\u2028 inside a message do not split it into two lines."""
    y, msg = read_collection(write(tmp_path, "ham\tone\x0btwo\u2028three\nspam\tfour\n"))
    assert y.shape == (2,)
    assert msg[0] == "one\x0btwo\u2028three"


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    """Completely empty lines (e.g. a blank last line) are ignored."""
    y, _ = read_collection(write(tmp_path, "ham\ta\n\nspam\tb\n\n"))
    assert y.tolist() == [0.0, 1.0]


def test_missing_file(tmp_path: Path) -> None:
    """A missing file names the path."""
    with pytest.raises(DataError, match=r"nope\.txt does not exist; check the path"):
        read_collection(tmp_path / "nope.txt")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    """A directory is rejected with a hint to pass the text file."""
    with pytest.raises(DataError, match="is a directory"):
        read_collection(tmp_path)


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that cannot be read (permission denied) gives a DataError mentioning permissions."""
    path = write(tmp_path, GOOD)

    def deny(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(DataError, match="cannot read SMS collection file .*Permission denied.*permissions"):
        read_collection(path)


def test_non_utf8_bytes_name_the_line(tmp_path: Path) -> None:
    """Latin-1 bytes are reported with the line number and the byte, plus how to re-encode."""
    path = write(tmp_path, "ham\tfine\nspam\tWin \xa3100\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"not valid UTF-8: line 2 holds byte 0xa3.*re-save the file as UTF-8"):
        read_collection(path)


def test_non_utf8_lists_every_bad_line(tmp_path: Path) -> None:
    """When several lines hold invalid bytes, all of their numbers are listed."""
    path = write(tmp_path, b"ham\t\xe9a\nham\tok\nspam\t\xff\n")
    with pytest.raises(DataError, match=r"line 1 .*lines with invalid bytes: 1, 3"):
        read_collection(path)


def test_empty_file(tmp_path: Path) -> None:
    """An empty (or all-blank) file says it holds no messages."""
    with pytest.raises(DataError, match="holds no messages"):
        read_collection(write(tmp_path, "\n\n"))


def test_missing_tab(tmp_path: Path) -> None:
    """A line without a tab is reported by line number."""
    with pytest.raises(DataError, match=r"no tab between label and text on line\(s\) 2\b.*Fix or delete"):
        read_collection(write(tmp_path, "ham\tok\nspam no tab here\nham\tok\n"))


def test_unknown_label(tmp_path: Path) -> None:
    """A label other than ham/spam is quoted with its line number."""
    with pytest.raises(DataError, match=r"unknown label \(not 'ham'/'spam'\) on line\(s\) 3 \('junk'\)"):
        read_collection(write(tmp_path, "ham\tok\nspam\tok\njunk\twhat\n"))


def test_empty_text(tmp_path: Path) -> None:
    """A label followed by nothing but whitespace is an empty message."""
    with pytest.raises(DataError, match=r"empty message text on line\(s\) 1, 3"):
        read_collection(write(tmp_path, "ham\t\nspam\tok\nham\t   \n"))


def test_several_problems_in_one_message(tmp_path: Path) -> None:
    """All kinds of malformed lines are reported together, with long lists shortened."""
    content = "".join("nolabel\n" for _ in range(7)) + "eggs\tx\nham\t\n"
    with pytest.raises(DataError) as info:
        read_collection(write(tmp_path, content))
    text = str(info.value)
    assert "line(s) 1, 2, 3, 4, 5 and 2 more" in text
    assert "line(s) 8 ('eggs')" in text
    assert "empty message text on line(s) 9" in text
    assert str(tmp_path / "SMSSpamCollection") in text


def test_real_collection_counts() -> None:
    """The raw collection shipped in the repo parses to 5,574 messages, 747 of them spam."""
    path = Path(__file__).resolve().parents[1] / "data" / "SMSSpamCollection"
    if not path.exists():
        pytest.skip("data/SMSSpamCollection is not present")
    y, msg = read_collection(path)
    assert y.shape == msg.shape == (5574,)
    assert int(y.sum()) == 747
    assert msg[0].startswith("Go until jurong point")
