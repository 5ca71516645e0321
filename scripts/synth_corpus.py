"""A deterministic synthetic text corpus for the `prepare` measurement (scripts/prepare_1gb.sh).

English-like prose and Python-like code over a Zipf-distributed lexicon of invented words (a few with accents, CJK or
emoji), in files of varied sizes (tens of kB to a few MB) plus a few large files that `prepare` has to cut into
pieces. The same --seed always gives byte-identical files. Write it under /tmp; never commit it.

    python scripts/synth_corpus.py --out /tmp/mt1g/corpus --size-mb 1000 --seed 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SYLLABLES = ["ka", "lo", "mi", "ne", "tra", "pe", "st", "or", "an", "ex", "qu", "io", "ul", "re", "de", "ch", "sh",
             "th", "ing", "ed", "ver", "con", "al", "is", "ment", "pro", "ti", "on", "er", "bu"]
EXOTIC = ["é", "ü", "ñ", "ø", "ß", "数据", "変換", "данные", "λ", "😀", "🚀"]
KEYWORDS = ["def", "return", "if", "else", "for", "in", "while", "class", "import", "from", "with", "as", "not",
            "and", "or", "None", "True", "False", "self", "yield", "lambda", "try", "except", "raise"]


def lexicon(rng: np.random.Generator, size: int = 40_000) -> list[str]:
    words = set()
    while len(words) < size:
        word = "".join(rng.choice(SYLLABLES, size=int(rng.integers(1, 5))))
        if rng.random() < 0.02:
            word += str(rng.choice(EXOTIC))
        words.add(word)
    ordered = sorted(words)  # a set's order is not deterministic across runs; a seeded shuffle is
    rng.shuffle(ordered)
    return ordered


class Writer:
    def __init__(self, rng: np.random.Generator, words: list[str]):
        self.rng, self.words = rng, words
        weights = 1.0 / (np.arange(len(words)) + 2.7)
        self.p = weights / weights.sum()

    def _draw(self, n: int) -> list[str]:
        return [self.words[i] for i in self.rng.choice(len(self.words), size=n, p=self.p).tolist()]

    def prose(self, n_lines: int) -> list[str]:
        lengths = self.rng.integers(4, 22, size=n_lines).tolist()
        words = self._draw(sum(lengths))
        ends = self.rng.choice([".", ".", ".", "?", "!", ";", ":"], size=n_lines).tolist()
        blank = (self.rng.random(n_lines) < 0.15).tolist()
        lines, k = [], 0
        for n, end, gap in zip(lengths, ends, blank):
            sentence = words[k:k + n]
            k += n
            sentence[0] = sentence[0].capitalize()
            if n > 8:
                sentence[n // 2] += ","
            lines.append(" ".join(sentence) + end)
            if gap:
                lines.append("")
        return lines

    def code(self, n_lines: int) -> list[str]:
        words = self._draw(6 * n_lines)
        kinds = self.rng.integers(0, 9, size=n_lines).tolist()
        indents = (4 * self.rng.integers(0, 4, size=n_lines)).tolist()
        numbers = self.rng.integers(0, 100_000, size=n_lines).tolist()
        keywords = self.rng.choice(KEYWORDS, size=n_lines).tolist()
        lines = []
        for i, (kind, indent, num, kw) in enumerate(zip(kinds, indents, numbers, keywords)):
            a, b, c, d, e, f = words[6 * i:6 * i + 6]
            body = [f"def {a}_{b}(self, {c}, {d}={num}):", f"{a} = {b}({c}, {d}) + {num}", f"return {a}.{b}[{c}]",
                    f"# {a} {b} {c} {d} {e} {f}", f"if {a} == {b} and not {c}:", f"for {a} in range({num}):",
                    f'{a}["{b}"] = "{c} {d}"', f"{kw} {a}_{b}.{c}({d}, {e}={f!r})", f"class {a.capitalize()}{b}:"][kind]
            lines.append(" " * indent + body)
            if kind in (0, 8):
                lines.append("")
        return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--size-mb", type=float, default=1000.0, help="Total size in MB (10^6 bytes).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    writer = Writer(rng, lexicon(rng))
    target = int(args.size_mb * 1e6)
    big = [int(target * share) for share in (0.08, 0.05, 0.03)]  # a few files larger than one unit of work
    sizes, total = [], sum(big)
    while total < target:
        size = min(int(np.exp(rng.uniform(np.log(20e3), np.log(6e6)))), target - total)
        sizes.append(size)
        total += size
    out = Path(args.out)
    written = 0
    for i, size in enumerate(big + sizes):
        code = i % 3 != 0
        path = out / ("src" if code else "text") / f"{i % 17:02d}" / f"file_{i:05d}.{'py' if code else 'txt'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as fh:
            done = 0
            while done < size:
                block = "\n".join(writer.code(4000) if code else writer.prose(2500)) + "\n"
                block = block[:max(size - done, 1)]
                block = block[:block.rfind("\n") + 1] or block
                fh.write(block)
                done += len(block.encode("utf-8"))
        written += path.stat().st_size
    print(f"wrote {len(big) + len(sizes)} files, {written / 1e6:,.1f} MB -> {out}")


if __name__ == "__main__":
    main()
