"""Other libraries' output kept out of the user's terminal, in a log file the command names once.

While a command runs inside :func:`capture`, file descriptors 1 and 2 (where C and C++ libraries
write: ExecuTorch's cpuinfo lines, TVM's and onnxruntime's logs, worker processes) and Python's
``sys.stdout`` / ``sys.stderr`` (where ``warnings``, ``logging`` and progress bars such as tqdm's
go) all point to the log file. edgevlm's own output — the consoles of :mod:`.output`, JSON, streamed
text — goes to the terminal through duplicates of the original descriptors, taken before the swap.

``--verbose`` turns the capture off: everything reaches the terminal live, as without edgevlm's
wrapping.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from . import output


def log_dir() -> Path:
    """``$EDGEVLM_LOG_DIR``, else ``$XDG_CACHE_HOME/edgevlm/logs`` (``~/.cache/edgevlm/logs``)."""
    if os.environ.get("EDGEVLM_LOG_DIR"):
        return Path(os.environ["EDGEVLM_LOG_DIR"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "edgevlm" / "logs"


class LibraryLog:
    """The log of one command; ``path`` is where it is now (:meth:`move_to` relocates it)."""

    def __init__(self, path: Path | None):
        self.path = path
        self._fd: int | None = None
        self._text: TextIO | None = None

    @property
    def active(self) -> bool:
        return self._fd is not None

    def lines(self) -> int:
        """Non-empty lines written so far (0 when not capturing)."""
        if self.path is None:
            return 0
        self.flush()
        try:
            with open(self.path, "rb") as f:
                return sum(1 for line in f if line.strip())
        except OSError:
            return 0

    def flush(self) -> None:
        if self._text is not None:
            self._text.flush()

    def move_to(self, path: Path) -> None:
        """Continue the log at ``path`` (its folder must exist), keeping what was written so far."""
        if not self.active or self.path is None or Path(path) == self.path:
            return
        self.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        path = Path(path)
        shutil.copyfile(self.path, path)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        old_fd, self._fd = self._fd, fd
        text = _text_stream(fd)
        if sys.stdout is self._text:
            sys.stdout = text
        if sys.stderr is self._text:
            sys.stderr = text
        self._text.close()
        self._text = text
        os.close(old_fd)
        try:
            os.unlink(self.path)
        except OSError:
            pass
        self.path = path

    def note(self) -> str:
        """The line that names the log, or "" when nothing was written to it."""
        n = self.lines()
        if not n:
            return ""
        return f"other libraries' messages ({n} lines): {self.path} (--verbose shows them live)"


def _text_stream(fd: int) -> TextIO:
    return io.TextIOWrapper(os.fdopen(fd, "wb", buffering=0, closefd=False), encoding="utf-8", errors="replace",
                            line_buffering=True)


def _user_stream(stream: TextIO, fd: int, opened: list[TextIO]) -> TextIO:
    """A stream to the user's terminal that survives pointing ``fd`` elsewhere."""
    try:
        is_fd = stream.fileno() == fd
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        is_fd = False
    if not is_fd:
        return stream  # already not the descriptor (pytest's capsys, a StringIO): keep writing to it
    stream.flush()
    dup = open(os.dup(fd), "w", encoding=getattr(stream, "encoding", None) or "utf-8", errors="replace",
               buffering=1, closefd=True)
    opened.append(dup)
    return dup


@contextmanager
def capture(command: str, verbose: bool = False) -> Iterator[LibraryLog]:
    """Route other libraries' output to ``log_dir()/COMMAND.log`` for the duration of a command."""
    if verbose:
        yield LibraryLog(None)
        return
    folder = log_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{command}.log"
        log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError:
        yield LibraryLog(None)  # nowhere to write a log: leave the terminal as it is
        return
    opened: list[TextIO] = []
    old_out, old_err = sys.stdout, sys.stderr
    user_out = _user_stream(old_out, 1, opened)
    user_err = _user_stream(old_err, 2, opened)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    log = LibraryLog(path)
    log._fd = log_fd
    log._text = _text_stream(log_fd)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    sys.stdout = sys.stderr = log._text
    output.use_streams(user_out, user_err)
    try:
        yield log
    finally:
        output.use_streams(None, None)
        log.flush()
        sys.stdout, sys.stderr = old_out, old_err
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        for s in opened:
            try:
                s.flush()
                s.close()
            except OSError:
                pass
        if log._text is not None:
            log._text.close()
        if log._fd is not None:
            os.close(log._fd)
        log._fd, log._text = None, None
