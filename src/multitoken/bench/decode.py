"""Decoders side by side on the same prompts, in one run, alternating, with outputs compared.

The cases: plain (multitoken's KV-cached greedy/sampled decoding with the next-token head), speculative (the model's
own heads draft, head 1 verifies; when the model has extra heads) and, on request, transformers' `generate` on the
very same weights (exported as a LlamaForCausalLM). Every case runs on every batch in turns, the order rotating from
round to round, so that warm-up, caches and machine load fall on all alike; a first untimed round warms all up.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from multitoken.errors import ConfigError

from multitoken.decoding.generate import generate
from multitoken.decoding.steps import pad_after_stop, pad_prompts, stop_hits
from multitoken.decoding.speculative import DecodeStats, speculative_generate
from multitoken.model import MTPModel


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def transformers_decoder(hf_model, max_new_tokens: int, pad_id: int) -> Callable:
    """Greedy `generate` of a transformers model on a (padded prompts, lengths) batch -> new tokens (B, N).
    Rows are re-padded on the left with an attention mask, as transformers expects for batched prompts."""
    def decode(batch):
        prompts, lengths = batch
        B, T0 = prompts.shape
        ids = torch.full_like(prompts, pad_id)
        mask = torch.zeros_like(prompts)
        for row in range(B):
            n = int(lengths[row])
            ids[row, T0 - n:], mask[row, T0 - n:] = prompts[row, :n], 1
        with torch.no_grad():
            out = hf_model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                    min_new_tokens=max_new_tokens, do_sample=False, eos_token_id=None,
                                    pad_token_id=pad_id, temperature=None, top_p=None, top_k=None)
        return out[:, T0:]
    return decode


def llama_cpp_decoder(gguf_path: str, max_new_tokens: int, context: int, threads: int) -> Callable:
    """llama.cpp's own plain greedy decoding (llama-cpp-python) of a GGUF file on a (padded prompts, lengths) batch
    -> new tokens (B, N): one row after another (its batch-1 path, prefill included), every max_new_tokens decoded."""
    try:
        from llama_cpp import Llama
    except ImportError:
        raise ConfigError("--against-llama-cpp needs llama-cpp-python (built from source on CPUs: CMAKE_ARGS="
                          "\"-DGGML_NATIVE=ON\" pip install llama-cpp-python)") from None
    llm = Llama(model_path=str(gguf_path), n_ctx=context, n_threads=threads, n_threads_batch=threads,
                n_batch=min(context, 512), verbose=False)

    def decode(batch):
        prompts, lengths = batch
        out = torch.zeros(prompts.shape[0], max_new_tokens, dtype=torch.long)
        for row in range(prompts.shape[0]):
            tokens = prompts[row, :int(lengths[row])].tolist()
            for j, token in enumerate(llm.generate(tokens, temp=0.0, top_k=1, reset=True)):
                out[row, j] = token
                if j + 1 == max_new_tokens:
                    break
        return out.to(prompts.device)
    return decode


def generated_tokens(out: torch.Tensor, stop_ids: torch.Tensor | None) -> torch.Tensor:
    """Tokens each row produced (B,): up to and including its first stop token, or all of it."""
    hit = stop_hits(out, stop_ids)
    return torch.where(hit.any(1), hit.long().argmax(1) + 1, out.shape[1])


# The peers a benchmark may time beside plain decoding (case name -> its key in the JSON record's fields).
REFERENCES = {"transformers": "transformers", "llama.cpp": "llama_cpp"}
STABLE_WITHIN = 0.02  # a median ratio that moves less than this when a round is added counts as settled


@dataclass
class Measurements:
    """Every timed round of every case, and what the decoders said."""

    seconds: list[dict[str, float]] = field(default_factory=list)  # per round: case -> seconds over all batches
    tokens: list[dict[str, int]] = field(default_factory=list)  # per round: case -> tokens produced
    stats: DecodeStats = field(default_factory=DecodeStats)  # speculative decoding's, over every call
    identical: dict[str, bool] = field(default_factory=dict)  # case -> its outputs equal plain decoding's
    plain_forwards: int = 0  # one per token of each batch's longest row, every round
    speculative_calls: int = 0  # one prefill each

    def rates(self) -> dict[str, list[float]]:
        """tokens/s per case, one per round."""
        return {name: [t[name] / s[name] for t, s in zip(self.tokens, self.seconds)] for name in self.seconds[0]}

    def ratios(self, name: str) -> list[float]:
        """Per round, case name's tokens/s over plain decoding's: the two ran in the same round, under the same
        machine load, so the ratio's spread is the benchmark's own noise."""
        rates = self.rates()
        return [r / p for r, p in zip(rates[name], rates["plain"])]


def _cases(model: MTPModel, max_new_tokens: int, draft_len: int | None, temperature: float, seed: int, device,
           references: dict[str, Callable], compile: bool, tree,
           stop_ids: torch.Tensor | None) -> dict[str, Callable]:
    """The decoders to compare: batch -> (new tokens, statistics or None)."""
    sampling = dict(temperature=temperature, stop_ids=stop_ids)

    def plain(batch):
        return generate(model, batch[0], max_new_tokens, lengths=batch[1], compile=compile,
                        generator=torch.Generator(device=device).manual_seed(seed), **sampling), None

    def speculative(batch):
        return speculative_generate(model, batch[0], max_new_tokens, draft_len=draft_len, lengths=batch[1],
                                    generator=torch.Generator(device=device).manual_seed(seed), tree=tree,
                                    compile=compile, **sampling)

    cases = {"plain": plain}
    if model.n_future > 1 or tree is not None:  # a next-token model with copies from the context (or auto's pick)
        cases["speculative"] = speculative
    for name, reference in references.items():
        cases[name] = lambda batch, reference=reference: (reference(batch), None)
    return cases


def _warm_up(model: MTPModel, cases: dict[str, Callable], batches: list) -> dict[str, float]:
    """Run every case once on every batch shape, untimed (every shape compiles once, before timing); the seconds
    each case spent compiling."""
    from multitoken.decoding.static import total_compile_seconds

    compile_seconds = {}
    shapes = {tuple(b[0].shape): b for b in batches}.values()
    for name, fn in cases.items():
        before = total_compile_seconds(model)
        for batch in shapes:
            fn(batch)
        compile_seconds[name] = total_compile_seconds(model) - before
    return compile_seconds


def _round(cases: dict[str, Callable], batches: list, measured: Measurements, stop_ids: torch.Tensor | None) -> None:
    """One timed round: every case on every batch, the order rotating from round to round."""
    names = list(cases)
    shift = len(measured.seconds) % len(names)
    order = names[shift:] + names[:shift]
    seconds, tokens = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0)
    for batch in batches:
        outputs = {}
        for name in order:
            (out, call_stats), elapsed = _timed(lambda: cases[name](batch))
            seconds[name] += elapsed
            # A reference (transformers, llama.cpp) decodes all max_new_tokens: the comparison is per token decoded
            counts = generated_tokens(out, None if name in REFERENCES else stop_ids)
            tokens[name] += int(counts.sum())
            if name == "plain":
                measured.plain_forwards += int(counts.max())
            outputs[name] = out
            if call_stats is not None:
                measured.stats.add(call_stats)
                measured.speculative_calls += 1
        for name in names[1:]:
            other = pad_after_stop(outputs[name].to(outputs["plain"].device), stop_ids)
            measured.identical[name] = measured.identical.get(name, True) and torch.equal(outputs["plain"], other)
    measured.seconds.append(seconds)
    measured.tokens.append(tokens)


def settled(ratios: list[float]) -> bool:
    """Whether the median of these per-round ratios stayed put (within STABLE_WITHIN) when the last round came in."""
    if len(ratios) < 3:
        return False
    now, before = statistics.median(ratios), statistics.median(ratios[:-1])
    return abs(now - before) <= STABLE_WITHIN * now


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def bench_decode(model: MTPModel, prompts: list[list[int]], batch_size: int, max_new_tokens: int,
                 draft_len: int | None = None, temperature: float = 0.0, repeats: int = 3, seed: int = 0,
                 device: torch.device | str = "cpu", references: dict[str, Callable] | None = None,
                 compile: bool = False,
                 tree=None, stop_ids: torch.Tensor | None = None, max_repeats: int | None = None) -> dict:
    """Time the decoders side by side over `repeats` rounds, then add rounds (up to max_repeats, default twice
    repeats) until every median ratio to plain decoding is settled; the result says whether it was.

    references: decoders to compare against, by name in REFERENCES (`transformers_decoder`, `llama_cpp_decoder`),
    greedy only.
    compile applies to both plain and speculative decoding, so that the speedup is over the best plain decoding.
    stop_ids: rows end at their first stop token (the model's end-of-sequence), and tokens/s counts the tokens each
    decoder produced up to it (the reference decodes all max_new_tokens: it is compared on plain decoding's tokens)."""
    batches = [pad_prompts(prompts[i:i + batch_size], device) for i in range(0, len(prompts), batch_size)]
    cases = _cases(model, max_new_tokens, draft_len, temperature, seed, device, references or {}, compile, tree,
                   stop_ids)
    compile_seconds = _warm_up(model, cases, batches)
    measured = Measurements()
    max_repeats = max(repeats, 2 * repeats if max_repeats is None else max_repeats)
    compared = list(cases)[1:]
    while len(measured.seconds) < repeats or (
            len(measured.seconds) < max_repeats and not all(settled(measured.ratios(n)) for n in compared)):
        _round(cases, batches, measured, stop_ids)
    result = _summary(model, measured, compared, temperature, tree)
    result.update(batch_size=batch_size, device=str(torch.device(device)), max_new_tokens=max_new_tokens,
                  num_prompts=len(prompts), repeats=len(measured.seconds), repeats_asked=repeats,
                  max_repeats=max_repeats, temperature=temperature, new_tokens=measured.tokens[0]["plain"],
                  stop_at_eos=stop_ids is not None, cpu_threads=torch.get_num_threads(), compile=compile,
                  compile_seconds=compile_seconds)
    return result


def _summary(model: MTPModel, measured: Measurements, compared: list[str], temperature: float, tree) -> dict:
    """The medians, spreads and decoding statistics of a measurement, as the JSON record's fields."""
    rounds = measured.rates()
    rates = {name: statistics.median(values) for name, values in rounds.items()}
    result = {"tokens_per_s_plain": rates["plain"],
              "tokens_per_s_rounds": rounds,  # every round's rate; the tokens_per_s_* fields are their medians
              "tokens_per_s_spread": {name: spread(values) for name, values in rounds.items()},
              "forwards_plain": measured.plain_forwards, "tree_nodes": 1}
    for name in compared:
        ratios = measured.ratios(name)
        # Told apart from 1.00x only when every round's ratio falls on the same side of it.
        result[f"ratio_rounds_{name}"] = ratios
        result[f"ratio_{name}_settled"] = settled(ratios)
        result[f"ratio_{name}_beyond_noise"] = len(ratios) >= 2 and (min(ratios) > 1 or max(ratios) < 1)
    if "speculative" in compared:
        result.update(_speculative_fields(model, measured, rates, temperature, tree))
    for name, key in REFERENCES.items():
        if name in compared:
            result.update({f"tokens_per_s_{key}": rates[name], f"plain_vs_{key}": rates["plain"] / rates[name],
                           f"identical_to_{key}": measured.identical[name]})
            if "speculative" in rates:
                result[f"speculative_vs_{key}"] = rates["speculative"] / rates[name]
    return result


def _speculative_fields(model: MTPModel, measured: Measurements, rates: dict[str, float], temperature: float,
                        tree) -> dict:
    stats = measured.stats
    drafting = tree is None or tree.drafts  # an empty tree: --tree auto chose plain decoding
    acceptance = stats.acceptance_per_position if drafting else []
    k = len(acceptance)
    heads = k if tree is None else tree.head_depth  # copied drafts cost no head
    trunk = model.config.n_trunk_layers
    return {
        "tokens_per_s_speculative": rates["speculative"],
        "speedup": rates["speculative"] / rates["plain"],
        "tau": stats.tau,
        "acceptance_per_position": acceptance,
        # Under sampling the two decoders draw differently (same law, different random streams): not comparable.
        "identical": measured.identical["speculative"] if temperature == 0 else None,
        "draft_len": k,
        # speedup / tau is a plain step's time over a speculative step's. Where only reading weights costs
        # (large models on a GPU), a plain step reads trunk + head 1 and a speculative one trunk + k + 1 heads.
        "memory_bound_limit": (trunk + 1) / (trunk + heads + 1),
        "forwards_speculative": stats.forwards + measured.speculative_calls,  # verification forwards + prefills
        "tree_nodes": stats.tree_nodes,
        # where copies from the context took the heads' first-choice path (trees with heads and `lookup`)
        "copied_share": stats.copied_steps / max(stats.row_steps, 1) if tree is not None and tree.lookup
        and tree.paths else None,
        "tree": "chain" if tree is None else (str(tree) or "plain"),
    }
