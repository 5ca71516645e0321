"""Chat prompts for self-distillation and for measuring speculative decoding: questions a user might ask a small
assistant, as `{"messages": [...]}` lines (the format `distill` and `bench decode --prompts` read).

The training file crosses request templates with topics; the held-out file asks about other topics only, so that a
benchmark on it measures heads on conversations they never saw. Deterministic: the same files on every machine.

    python scripts/make_chat_prompts.py --out data/chat    # data/chat/train.jsonl (600), data/chat/heldout.jsonl (24)
    python scripts/make_chat_prompts.py --train 320        # the first 32 training topics only (a faster distill)
    python scripts/make_chat_prompts.py --more             # also data/chat/train-more.jsonl (1,000 more, see MORE_*)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TEMPLATES = [
    "Explain {} in simple terms.",
    "Write a short paragraph about {}.",
    "What are three interesting facts about {}?",
    "Why does {} matter? Answer in a few sentences.",
    "Give me a beginner's guide to {}.",
    "What are common misconceptions about {}?",
    "Summarize the history of {} briefly.",
    "How would you teach {} to a ten-year-old?",
    "List the pros and cons of {}.",
    "Write a haiku about {}, then explain it.",
]

TRAIN_TOPICS = [
    "photosynthesis", "the water cycle", "black holes", "the French Revolution", "machine learning", "volcanoes",
    "the human heart", "climate change", "the Roman Empire", "electric cars", "honeybees", "the internet",
    "vaccines", "the moon landing", "recycling", "coffee", "the stock market", "earthquakes", "democracy",
    "the piano", "rainforests", "gravity", "the printing press", "sleep", "chess", "the immune system", "solar power",
    "the Great Wall of China", "bread baking", "penguins", "the periodic table", "jazz music", "dinosaurs",
    "the Olympic Games", "bicycles", "tea", "the ocean tides", "Shakespeare", "rainbows", "antibiotics",
    "the Renaissance", "nuclear energy", "meditation", "the Amazon river", "computers", "soccer", "the Sun",
    "origami", "the Industrial Revolution", "whales", "public libraries", "electricity", "gardening",
    "the Silk Road", "mountains", "friendship", "the alphabet", "trains", "chocolate", "the Moon",
]

HELDOUT_TOPICS = [
    "glaciers", "the Egyptian pyramids", "octopuses", "wind turbines", "the violin", "the human brain",
    "deserts", "the telephone", "ancient Greece", "coral reefs", "bees and pollination", "the Milky Way",
    "basketball", "cheese making", "the Titanic", "hurricanes", "photography", "the printing of money",
    "owls", "the metric system", "kites", "submarines", "yoga", "the Eiffel Tower",
]


# A second training set, for heads that have overfit the first: new requests over the training topics, and every
# request over new topics (none of them held out).
MORE_TEMPLATES = [
    "Describe {} to someone who has never heard of it.",
    "What is the most surprising thing about {}?",
    "Write a short story that involves {}.",
    "How has {} changed over time?",
    "Compare {} with something similar and explain the differences.",
    "What should everyone know about {}?",
    "Give me five quick tips related to {}.",
    "Write a short poem about {}.",
    "What questions do scientists still ask about {}?",
    "Explain {} in one paragraph, then give an example.",
]

MORE_TOPICS = [
    "lighthouses", "the Vikings", "tornadoes", "the guitar", "elephants", "the speed of light", "castles",
    "rice farming", "the human skeleton", "airplanes", "the Arctic", "bats", "the wheel", "mushrooms", "robots",
    "marathons", "the Mayan civilization", "snowflakes", "clocks", "dolphins",
]


def conversation(template: str, topic: str) -> dict:
    return {"messages": [{"role": "user", "content": template.format(topic)}]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/chat", help="Folder for train.jsonl and heldout.jsonl.")
    parser.add_argument("--train", type=int, default=len(TRAIN_TOPICS) * len(TEMPLATES),
                        help="Training conversations: the first N (topic by topic, every template for each).")
    parser.add_argument("--more", action="store_true",
                        help="Also write train-more.jsonl: MORE_TEMPLATES over the training topics, then every "
                             "template over MORE_TOPICS (1,000 conversations).")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = [conversation(t, topic) for topic in TRAIN_TOPICS for t in TEMPLATES][:args.train]
    # Each held-out topic with one template, in turn: every template appears, no held-out topic is in training.
    heldout = [conversation(TEMPLATES[i % len(TEMPLATES)], topic) for i, topic in enumerate(HELDOUT_TOPICS)]
    assert not set(TRAIN_TOPICS + MORE_TOPICS) & set(HELDOUT_TOPICS)
    files = [("train.jsonl", train), ("heldout.jsonl", heldout)]
    if args.more:
        more = ([conversation(t, topic) for topic in TRAIN_TOPICS for t in MORE_TEMPLATES]
                + [conversation(t, topic) for topic in MORE_TOPICS for t in TEMPLATES + MORE_TEMPLATES])
        files.append(("train-more.jsonl", more))
    for name, rows in files:
        (out / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
        print(f"wrote {out / name}: {len(rows)} conversations")


if __name__ == "__main__":
    main()
