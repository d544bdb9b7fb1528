"""Read the raw UCI SMS Spam Collection text file (``label<TAB>text`` per line, UTF-8).

The format: one message per line, the label ``ham`` or ``spam``, one tab, then the message
text (kept verbatim; any further tabs belong to the text). Labels are matched case-insensitively.
A UTF-8 byte-order mark at the start and Windows line endings are tolerated; lines that are
completely empty (e.g. a blank last line) are skipped. Everything else that does not fit is
reported as a :class:`~pyro_spam.errors.DataError` naming the file and line number(s).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .errors import DataError

log = logging.getLogger(__name__)

LABELS = {"ham": 0.0, "spam": 1.0}
MAX_REPORTED = 5  # line numbers quoted in one error message


def read_collection(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse an SMS Spam Collection file.

    Returns
    -------
    labels : ndarray of shape (n,), float32
        0.0 = ham, 1.0 = spam, in file order.
    msg : ndarray of shape (n,), unicode (``U``) dtype
        The message texts, in file order.

    Raises
    ------
    DataError
        If the file is missing or unreadable, is not UTF-8, is empty, or has malformed lines.
    """
    path = Path(path)
    raw = _read_bytes(path)
    text = _decode(raw, path)
    if text.startswith("\ufeff"):
        text = text[1:]

    labels: list[float] = []
    messages: list[str] = []
    no_tab: list[int] = []
    bad_label: list[tuple[int, str]] = []
    empty_text: list[int] = []
    # split("\n") rather than splitlines(): messages may contain \x0b, \x1c, \u2028 etc., which
    # splitlines() would treat as line breaks.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if line.endswith("\r"):
            line = line[:-1]
        if line == "":
            continue
        label, tab, body = line.partition("\t")
        if not tab:
            no_tab.append(lineno)
            continue
        key = label.strip().lower()
        if key not in LABELS:
            bad_label.append((lineno, label))
            continue
        # NUL-only text counts as empty: numpy's str arrays drop trailing NULs, so it would load as "".
        if not body.replace("\x00", "").strip():
            empty_text.append(lineno)
            continue
        labels.append(LABELS[key])
        messages.append(body)

    problems = _describe_problems(no_tab, bad_label, empty_text)
    if problems:
        raise DataError(
            f"{path} is not in the SMS Spam Collection format ('ham' or 'spam', a tab, the text; "
            f"one message per line): {'; '.join(problems)}. Fix or delete those lines"
        )
    if not messages:
        raise DataError(
            f"{path} holds no messages; expected one 'ham<TAB>text' or 'spam<TAB>text' line per message"
        )
    y = np.asarray(labels, dtype=np.float32)
    msg = np.asarray(messages, dtype=str)
    log.debug("read %d messages (%d spam) from %s", y.size, int(y.sum()), path)
    return y, msg


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise DataError(f"SMS collection file {path} does not exist; check the path")
    if path.is_dir():
        raise DataError(f"SMS collection path {path} is a directory; pass the SMSSpamCollection text file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(
            f"cannot read SMS collection file {path} ({exc.strerror or exc}); check its permissions"
        ) from None


def _decode(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = raw.count(b"\n", 0, exc.start) + 1
        bad_lines = _non_utf8_lines(raw)
        more = f" (lines with invalid bytes: {_fmt_lines(bad_lines)})" if len(bad_lines) > 1 else ""
        raise DataError(
            f"{path} is not valid UTF-8: line {lineno} holds byte 0x{raw[exc.start]:02x}{more}; "
            "re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def _non_utf8_lines(raw: bytes) -> list[int]:
    bad = []
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(lineno)
    return bad


def _describe_problems(no_tab: list[int], bad_label: list[tuple[int, str]], empty_text: list[int]) -> list[str]:
    problems = []
    if no_tab:
        problems.append(f"no tab between label and text on line(s) {_fmt_lines(no_tab)}")
    if bad_label:
        shown = ", ".join(f"{n} ({lab[:20]!r})" for n, lab in bad_label[:MAX_REPORTED])
        extra = f" and {len(bad_label) - MAX_REPORTED} more" if len(bad_label) > MAX_REPORTED else ""
        problems.append(f"unknown label (not 'ham'/'spam') on line(s) {shown}{extra}")
    if empty_text:
        problems.append(f"empty message text on line(s) {_fmt_lines(empty_text)}")
    return problems


def _fmt_lines(lines: list[int]) -> str:
    shown = ", ".join(str(n) for n in lines[:MAX_REPORTED])
    if len(lines) > MAX_REPORTED:
        shown += f" and {len(lines) - MAX_REPORTED} more"
    return shown
