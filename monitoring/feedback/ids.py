"""Response ids for requests that bring none: 128 random bits as 32 hex digits.

From the operating system's CSPRNG (`os.urandom`), so an id cannot be guessed from others and a
caller cannot label someone else's prediction by guessing. Drawn 4 KiB at a time: slicing the
next 32 digits costs about 0.25 µs, one `os.urandom(16).hex()` per id about 1 µs. Confined to
one thread (the server's event loop).
"""

import os

ID_HEX_DIGITS = 32
_BLOCK_BYTES = 4096


class ResponseIds:
    """A source of fresh random ids."""

    def __init__(self) -> None:
        self._digits = ""
        self._next = 0

    def new(self) -> str:
        """The next id."""
        start = self._next
        if start >= len(self._digits):
            self._digits, start = os.urandom(_BLOCK_BYTES).hex(), 0
        self._next = start + ID_HEX_DIGITS
        return self._digits[start : self._next]
