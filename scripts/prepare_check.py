"""Measuring and verifying `multitoken prepare` (used by scripts/prepare_1gb.sh; numbers in docs/data.md).

    python scripts/prepare_check.py measure --json OUT.json -- multitoken prepare ...
        runs the command and samples its whole process tree every 0.1 s: the peak of the summed RSS (counts pages
        shared between the forked workers once per process, so it overstates) and of the summed PSS (shares them out:
        the real footprint), plus wall time.

    python scripts/prepare_check.py verify PREPARED_DIR [--json OUT.json]
        decodes every shard back to bytes, streaming, and compares it with the source files byte for byte, in the
        manifest's order and split rule (text sources only). Byte-level BPE decodes through its byte table, which is
        exactly what its ByteLevel decoder does; a sample of documents is also re-encoded whole and compared token
        for token, to check that cutting files into pieces changed no token.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BLOCK = 1 << 22  # tokens (and bytes) compared per step: bounded memory


# --- measure --------------------------------------------------------------------------------------------------------

def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo += children.get(pid, [])
    return pids


def _memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes from smaps_rollup; zeros for a process that is gone."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, pss


def measure(command: list[str]) -> dict:
    start = time.perf_counter()
    proc = subprocess.Popen(command)
    peak_rss = peak_pss = peak_single = 0
    peak_procs = 0
    while proc.poll() is None:
        sizes = [_memory(pid) for pid in _tree(proc.pid)]
        peak_rss = max(peak_rss, sum(r for r, _ in sizes))
        peak_pss = max(peak_pss, sum(p for _, p in sizes))
        peak_single = max([peak_single] + [r for r, _ in sizes])
        peak_procs = max(peak_procs, sum(1 for r, _ in sizes if r))
        time.sleep(0.1)
    return {"command": command, "returncode": proc.returncode, "wall_s": round(time.perf_counter() - start, 2),
            "peak_tree_rss_bytes": peak_rss, "peak_tree_pss_bytes": peak_pss, "peak_process_rss_bytes": peak_single,
            "processes": peak_procs}


# --- verify ---------------------------------------------------------------------------------------------------------

def _byte_level_table(tokenizer) -> list[bytes]:
    """Token id -> the bytes it stands for (GPT-2's bytes_to_unicode, inverted); the end-of-text token -> NUL."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: b for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    byte_of = {chr(c): b for b, c in chars.items()}
    table = [b""] * tokenizer.vocab_size
    for token, i in tokenizer._tok.get_vocab(with_added_tokens=True).items():
        table[i] = b"\0" if i == tokenizer.eot_id else bytes(byte_of[ch] for ch in token)
    return table


def _decoded(tokens, tokenizer, table):
    for start in range(0, len(tokens), BLOCK):
        block = tokens[start:start + BLOCK]
        if table is None:  # bytes: the ids are the bytes, and the end-of-text id 0 is NUL
            yield block.astype(np.uint8).tobytes()
        else:
            yield b"".join([table[i] for i in block.tolist()])


def _expected(paths: list[Path]):
    for path in paths:
        with path.open("rb") as f:
            while chunk := f.read(BLOCK):
                yield chunk
        yield b"\0"


def _same_stream(a, b) -> tuple[bool, int]:
    """Whether two streams of byte chunks are equal, and how many bytes were compared."""
    buf_a = buf_b = b""
    done = 0
    while True:
        while len(buf_a) < BLOCK and (chunk := next(a, None)) is not None:
            buf_a += chunk
        while len(buf_b) < BLOCK and (chunk := next(b, None)) is not None:
            buf_b += chunk
        n = min(len(buf_a), len(buf_b))
        if buf_a[:n] != buf_b[:n]:
            return False, done + next(i for i in range(n) if buf_a[i] != buf_b[i])
        done += n
        buf_a, buf_b = buf_a[n:], buf_b[n:]
        if n == 0:
            return not buf_a and not buf_b, done


def verify(directory: str, sample: int = 20) -> dict:
    from multitoken.data.corpus import is_validation
    from multitoken.data.shards import open_prepared

    start = time.perf_counter()
    tokenizer, data = open_prepared(directory)
    manifest = data.meta["manifest"]
    sources = [s for s in manifest["sources"] if s["size"]]
    assert all(s["kind"] == "text" for s in sources), "verify handles text sources only"
    table = None if tokenizer.kind == "bytes" else _byte_level_table(tokenizer)
    result = {"directory": directory, "tokenizer": tokenizer.kind, "splits": {}}
    for split, tokens in (("train", data.train), ("val", data.val)):
        paths = [Path(s["path"]) for s in sources
                 if is_validation(s["key"], manifest["val_fraction"]) == (split == "val")]
        equal, compared = _same_stream(_decoded(tokens, tokenizer, table), _expected(paths))
        result["splits"][split] = {"documents": len(paths), "tokens": len(tokens), "bytes_compared": compared,
                                   "identical": equal}
    if table is not None:  # re-encode small documents whole: the same tokens as the shards hold
        checked, offset, same = 0, 0, True
        for s in sources:
            if is_validation(s["key"], manifest["val_fraction"]):
                continue
            n = s["tokens"]
            if s["size"] < 4e6 and checked < sample:
                text = Path(s["path"]).read_text(encoding="utf-8")
                same &= data.train[offset:offset + n - 1].tolist() == tokenizer.encode(text)
                same &= tokenizer.decode(data.train[offset:offset + n - 1].tolist()) == text
                checked += 1
            offset += n
        result["whole_document_tokens"] = {"documents": checked, "identical": bool(same)}
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description="Measure or verify `multitoken prepare`.")
    sub = parser.add_subparsers(dest="what", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--json")
    m.add_argument("command", nargs=argparse.REMAINDER)
    v = sub.add_parser("verify")
    v.add_argument("directory")
    v.add_argument("--json")
    args = parser.parse_args()
    if args.what == "measure":
        result = measure(args.command[1:] if args.command[:1] == ["--"] else args.command)
    else:
        result = verify(args.directory)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    ok = result.get("returncode", 0) == 0 and all(s.get("identical", True) for s in result.get("splits", {}).values())
    return 0 if ok and result.get("whole_document_tokens", {}).get("identical", True) else 1


if __name__ == "__main__":
    sys.exit(main())
