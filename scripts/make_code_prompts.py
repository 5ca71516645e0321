"""Code prompts of our own for self-distillation and for measuring speculative decoding on code: chat requests that
ask a small assistant to write a Python function from its signature and docstring, as `{"messages": [...]}` lines
(the format `distill` and `bench decode --prompts` read). Written here, by hand: no benchmark's problems (HumanEval,
MBPP) are used, distilled from or tuned on.

The training file crosses request phrasings with the training functions; the held-out file asks for other functions
only, so that a benchmark on it measures drafts on code they never saw. Deterministic: the same files everywhere.

    python scripts/make_code_prompts.py --out data/code    # data/code/train.jsonl, data/code/heldout.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PHRASINGS = [
    "Write a Python function with this signature and docstring:\n\n{}",
    "Complete the following Python function:\n\n{}",
    "Implement this function in Python, then show one example call:\n\n{}",
    "Here is a function stub. Fill in the body:\n\n{}",
]

# (signature, docstring). Training functions first; HELD_OUT are never distilled.
FUNCTIONS = [
    ("def reverse_words(sentence: str) -> str:", "Return the words of sentence in reverse order."),
    ("def count_vowels(text: str) -> int:", "Count the vowels (a, e, i, o, u) in text, ignoring case."),
    ("def is_palindrome(text: str) -> bool:", "Whether text reads the same backwards, ignoring case and spaces."),
    ("def flatten(nested: list) -> list:", "Flatten a list of lists one level deep."),
    ("def chunk(items: list, size: int) -> list[list]:", "Split items into consecutive lists of at most size items."),
    ("def word_frequencies(text: str) -> dict[str, int]:", "Count how often each lowercase word occurs in text."),
    ("def celsius_to_fahrenheit(celsius: float) -> float:", "Convert a temperature from Celsius to Fahrenheit."),
    ("def fibonacci(n: int) -> list[int]:", "The first n Fibonacci numbers, starting 0, 1."),
    ("def merge_dicts(a: dict, b: dict) -> dict:", "A new dict with a's items, then b's (b wins on shared keys)."),
    ("def unique_sorted(items: list[int]) -> list[int]:", "The distinct values of items in increasing order."),
    ("def factorial(n: int) -> int:", "n! for n >= 0, computed iteratively."),
    ("def read_lines(path: str) -> list[str]:", "The lines of a text file without their line endings."),
    ("def max_subarray_sum(numbers: list[int]) -> int:", "The largest sum of a contiguous non-empty slice."),
    ("def capitalize_words(text: str) -> str:", "Capitalize the first letter of every word in text."),
    ("def gcd(a: int, b: int) -> int:", "The greatest common divisor of a and b (Euclid's algorithm)."),
    ("def transpose(matrix: list[list[int]]) -> list[list[int]]:", "The transpose of a rectangular matrix."),
    ("def remove_duplicates(items: list) -> list:", "items without repeats, keeping the first occurrence's order."),
    ("def average(numbers: list[float]) -> float:", "The arithmetic mean of numbers; 0.0 for an empty list."),
    ("def is_prime(n: int) -> bool:", "Whether n is a prime number."),
    ("def char_histogram(text: str) -> dict[str, int]:", "How many times each character occurs in text."),
    ("def rotate_list(items: list, k: int) -> list:", "items rotated right by k places."),
    ("def binary_search(items: list[int], target: int) -> int:", "The index of target in sorted items, or -1."),
    ("def snake_to_camel(name: str) -> str:", "Convert snake_case to camelCase."),
    ("def sum_of_squares(n: int) -> int:", "1^2 + 2^2 + ... + n^2."),
    ("def second_largest(numbers: list[int]) -> int:", "The second largest distinct value in numbers."),
    ("def group_by_length(words: list[str]) -> dict[int, list[str]]:", "Words grouped by their length."),
    ("def parse_csv_line(line: str) -> list[str]:", "Split one CSV line on commas, stripping spaces."),
    ("def running_total(numbers: list[int]) -> list[int]:", "The cumulative sums of numbers."),
    ("def count_words(text: str) -> int:", "The number of whitespace-separated words in text."),
    ("def dedent_lines(lines: list[str]) -> list[str]:", "Remove the common leading whitespace of lines."),
]
HELD_OUT = [
    ("def longest_word(text: str) -> str:", "The longest word in text (the first one on a tie)."),
    ("def is_anagram(a: str, b: str) -> bool:", "Whether a and b use the same letters, ignoring case and spaces."),
    ("def digits_sum(n: int) -> int:", "The sum of the decimal digits of a non-negative integer."),
    ("def pairwise_differences(numbers: list[int]) -> list[int]:", "Each element minus the one before it."),
    ("def title_case(text: str) -> str:", "Title-case text, leaving short words (a, an, the, of) lowercase."),
    ("def matrix_sum(matrix: list[list[int]]) -> int:", "The sum of every entry of a matrix."),
    ("def find_duplicates(items: list[int]) -> list[int]:", "The values that occur more than once, sorted."),
    ("def power_set(items: list) -> list[list]:", "Every subset of items."),
    ("def to_binary(n: int) -> str:", "The binary representation of a non-negative integer, without a prefix."),
    ("def count_lines(path: str) -> int:", "How many lines a text file has."),
    ("def normalize_whitespace(text: str) -> str:", "Collapse runs of whitespace into single spaces and strip."),
    ("def median(numbers: list[float]) -> float:", "The median of a non-empty list of numbers."),
]


def prompt(signature: str, docstring: str, phrasing: str) -> dict:
    stub = f'{signature}\n    """{docstring}"""\n'
    return {"messages": [{"role": "user", "content": phrasing.format(stub)}]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/code")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = [prompt(s, d, p) for p in PHRASINGS for s, d in FUNCTIONS]
    heldout = [prompt(s, d, PHRASINGS[i % len(PHRASINGS)]) for i, (s, d) in enumerate(HELD_OUT)]
    for name, rows in (("train", train), ("heldout", heldout)):
        path = out / f"{name}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        print(f"wrote {path}: {len(rows)} conversations")


if __name__ == "__main__":
    main()
