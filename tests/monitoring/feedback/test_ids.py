"""Response ids: 128 random bits as 32 hex digits, fresh every time."""

import re

from monitoring.feedback import ResponseIds


def test_ids_are_32_hex_digits_and_never_repeat_across_refills() -> None:
    ids = ResponseIds()
    drawn = [ids.new() for _ in range(1000)]  # about four 4 KiB blocks
    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in drawn)
    assert len(set(drawn)) == len(drawn)
    assert len(set(drawn) & {ResponseIds().new() for _ in range(1000)}) == 0
