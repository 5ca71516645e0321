"""Generated tokens as text: cut at end-of-sequence and stop strings, and streamed as it grows (the command line's
`generate` and `chat`, and the server's streamed answers)."""

from __future__ import annotations

import sys
from collections.abc import Callable


def _stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def cut_at_stops(text: str, stops: list[str], start: int = 0) -> str:
    """text up to the first stop string found after position start (the prompt's own text is never cut)."""
    ends = [i for i in (text.find(stop, start) for stop in stops) if i >= 0]
    return text[:min(ends)] if ends else text


def until_eos(new_ids: list[int], stop_ids: list[int] | None) -> tuple[list[int], int]:
    """The tokens of the text (up to the first end-of-sequence or end-of-turn token, which is not text) and how many
    were generated."""
    end = next((i for i, t in enumerate(new_ids) if t in (stop_ids or ())), None)
    if end is None:
        return new_ids, len(new_ids)
    return new_ids[:end], end + 1


class TextStream:
    """Writes the text (to stdout, or through `write`) as decoding accepts tokens (row 0): decoded cumulatively, so
    multi-byte characters and merged pieces come out whole, ending at end-of-sequence or before a stop string. The
    last characters are held back while they could still be the start of a stop string or of an unfinished
    character. `done` says the text has ended (end-of-sequence or a stop string), `text` is all of it so far."""

    def __init__(self, tokenizer, prefix_ids: list[int], stop_ids: list[int] | None, stops: list[str],
                 write: Callable[[str], None] | None = None):
        self.tokenizer, self.prefix_ids, self.stop_ids, self.stops = tokenizer, prefix_ids, stop_ids, stops
        self.write = write or _stdout
        self.start = len(tokenizer.decode(prefix_ids))
        self.hold = max((len(stop) - 1 for stop in stops), default=0)
        self.written = 0
        self.done = False
        self.text = ""

    def __call__(self, out, n_done) -> None:
        if not self.done:
            self.update(out[0, :int(n_done[0])].tolist())

    def update(self, new_ids: list[int], final: bool = False) -> None:
        ids, _ = until_eos(new_ids, self.stop_ids)
        full = self.tokenizer.decode(self.prefix_ids + ids)
        text = cut_at_stops(full, self.stops, self.start)[self.start:]
        finished = final or len(ids) < len(new_ids) or len(text) < len(full) - self.start
        ready = len(text) if finished else max(len(text) - self.hold, 0)
        while ready > 0 and not finished and text[ready - 1] == "\ufffd":  # an unfinished multi-byte character
            ready -= 1
        if ready > self.written:
            self.write(text[self.written:ready])
            self.written = ready
        self.text, self.done = text, finished

    def close(self, new_ids: list[int], end: str = "\n") -> None:
        if not self.done:
            self.update(new_ids, final=True)
        if end:
            self.write(end)
