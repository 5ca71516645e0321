"""The tokenizer of an imported model folder, and a model's tokenizer written the way Hugging Face folders hold it.

A Hugging Face folder has `tokenizer.json` (read with `tokenizers`) and a `tokenizer_config.json` naming its special
tokens; older Llama folders and Meta's have a SentencePiece `tokenizer.model`. Our byte-level tokenizer is written
as a `tokenizer.json` that maps each byte to its own id (GPT-2's byte-to-character table, no merges), so an exported
byte-level model works in transformers, and converting it back gives the byte-level tokenizer again.
"""

from __future__ import annotations

import json
from pathlib import Path

from multitoken.data.tokenizer import (EOT_TOKEN, HF_TOKENIZER_FILE, SENTENCEPIECE_FILE, TOKENIZER_FILE, BPETokenizer,
                                       ByteTokenizer, SentencePieceTokenizer, Tokenizer, require_tokenizers)
from multitoken.errors import CheckpointError, ConfigError
from multitoken.files import read_json_or

CHAT_TEMPLATE_FILE = "chat_template.jinja"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in character for each byte value (the ByteLevel pre-tokenizer's table)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def byte_level_hf_tokenizer():
    """A `tokenizers.Tokenizer` whose ids are the UTF-8 bytes: our ByteTokenizer in Hugging Face form."""
    tk = require_tokenizers()
    vocab = {char: b for b, char in bytes_to_unicode().items()}
    tokenizer = tk.Tokenizer(tk.models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = tk.decoders.ByteLevel()
    return tokenizer


def _is_byte_level_identity(tokenizer) -> bool:
    model = json.loads(tokenizer.to_str()).get("model", {})
    vocab = {char: b for b, char in bytes_to_unicode().items()}
    return model.get("type") == "BPE" and not model.get("merges") and model.get("vocab") == vocab


def _special(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def tokenizer_from_folder(folder: Path, model_config: dict | None = None) -> Tokenizer | None:
    """The tokenizer that came with a model folder (None when it has none). End-of-text is the model's eos token;
    a beginning-of-text token is kept when the tokenizer itself puts one before every text (Llama's <s>)."""
    if (folder / HF_TOKENIZER_FILE).is_file():
        Tokenizer = require_tokenizers().Tokenizer
        path = folder / HF_TOKENIZER_FILE
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception with serde's message
            raise CheckpointError(f"{path} is not a valid tokenizer.json ({str(e).splitlines()[0][:120]})") from None
        if _is_byte_level_identity(tok):
            return ByteTokenizer()
        settings = read_json_or(folder / TOKENIZER_FILE, {})
        eot = settings.get("eot_token") or _special(settings.get("eos_token"))
        generation = read_json_or(folder / "generation_config.json", {})
        for where in (model_config or {}, generation):  # where transformers looks for the eos, in its order
            eos_id = where.get("eos_token_id") if eot is None else None
            eos_id = eos_id[0] if isinstance(eos_id, list) and eos_id else eos_id
            eot = tok.id_to_token(eos_id) if isinstance(eos_id, int) else eot
        with_special, plain = tok.encode("x").ids, tok.encode("x", add_special_tokens=False).ids
        bos = tok.id_to_token(with_special[0]) if with_special[1:] == plain[:len(with_special) - 1] and \
            len(with_special) == len(plain) + 1 else None
        template = settings.get("chat_template")
        if not isinstance(template, str) and (folder / CHAT_TEMPLATE_FILE).is_file():
            template = (folder / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")  # transformers 5 keeps it apart
        # generation_config.json may list more than one eos: the other ones end turns (Gemma's <end_of_turn>)
        stops = generation.get("eos_token_id")
        stops = [tok.id_to_token(i) for i in (stops if isinstance(stops, list) else []) if isinstance(i, int)]
        try:
            return BPETokenizer(tok, eot or EOT_TOKEN, source=str(path), bos_token=bos,
                                chat_template=template if isinstance(template, str) else None,
                                stop_tokens=[t for t in stops if t is not None])
        except ConfigError as e:
            raise CheckpointError(str(e)) from None
    if (folder / SENTENCEPIECE_FILE).is_file():
        try:
            return SentencePieceTokenizer.from_file(folder / SENTENCEPIECE_FILE)
        except ConfigError as e:
            raise CheckpointError(str(e)) from None
    return None


def save_hf_tokenizer(tokenizer: Tokenizer, out: Path, context: int) -> dict[str, int | None]:
    """Write the tokenizer as a Hugging Face folder holds it; returns its bos/eos token ids for config.json."""
    if isinstance(tokenizer, SentencePieceTokenizer):
        tokenizer.save(out)  # tokenizer.model, which transformers' LlamaTokenizer reads
        settings = {"tokenizer_class": "LlamaTokenizer"}
        eos, bos = tokenizer._sp.id_to_piece(tokenizer.eot_id), \
            tokenizer._sp.id_to_piece(tokenizer.bos_id) if tokenizer.bos_id is not None else None
    else:
        hf = byte_level_hf_tokenizer() if isinstance(tokenizer, ByteTokenizer) else tokenizer._tok
        hf.save(str(out / HF_TOKENIZER_FILE))
        settings = {"tokenizer_class": "PreTrainedTokenizerFast"}
        eos = hf.id_to_token(tokenizer.eot_id)
        bos = hf.id_to_token(tokenizer.bos_id) if tokenizer.bos_id is not None else None
    if tokenizer.chat_template:
        settings["chat_template"] = tokenizer.chat_template
    settings.update({"eos_token": eos, "model_max_length": context, "clean_up_tokenization_spaces": False})
    if bos is not None:
        settings["bos_token"] = bos
    (out / TOKENIZER_FILE).write_text(json.dumps(settings, indent=1) + "\n")
    return {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eot_id}
