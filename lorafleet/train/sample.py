"""A small seeded dataset for a function the demo adapters do not know: ``set_timer``.

    python -m lorafleet.train.sample --train train.jsonl --heldout heldout.jsonl [--n 240 --seed 0]

For trying the train -> deploy -> eval loop on the demo model (docs/training.md), for the e2e
test and for benchmarks.train_throughput. Three of four examples ask for a timer (the answer is
a call whose arguments come from the request: an integer and a string); the rest are small talk,
answered in text without a call. Every example declares ``set_timer``, some a second tool too.
"""

from __future__ import annotations

import argparse
import random

from lorafleet.train.data import write_jsonl

FUNCTION = "set_timer"
TOOL = {"type": "function", "function": {
    "name": FUNCTION, "description": "Start a kitchen timer.",
    "parameters": {"type": "object", "properties": {
        "minutes": {"type": "integer", "description": "How long, in minutes"},
        "label": {"type": "string", "description": "What the timer is for"}},
        "required": ["minutes", "label"]}}}
OTHER_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Get the current weather for a city.",
                                      "parameters": {"type": "object", "properties": {
                                          "city": {"type": "string", "description": "The city name"}},
                                          "required": ["city"]}}},
    {"type": "function", "function": {"name": "play_music", "description": "Play a song.",
                                      "parameters": {"type": "object", "properties": {
                                          "song": {"type": "string", "description": "The song's title"}},
                                          "required": ["song"]}}},
]
# Each timer has its usual length: the call's arguments (an integer and a string) follow from the
# word the request names, which even the tiny demo base learns in a minute of CPU training.
PRESETS = {"tea": 3, "eggs": 7, "pasta": 10}
ASKS = [
    "Set a timer for the {label}.",
    "{label} timer please",
    "Start the {label} timer.",
    "Can you time the {label} for me?",
    "timer for {label}",
    "time my {label}",
]
SMALL_TALK = ["Thanks!", "hello", "What can you do?", "Tell me a joke.", "Good morning", "Who are you?",
              "How are you today?", "never mind", "What is a timer?", "ok"]
REPLY = "I can start timers: tell me how many minutes and what for."
DEVELOPER = "You are a model that can do function calling with the following functions"


def example(rng: random.Random) -> dict:
    """One conversation: a timer request answered by a call, or small talk answered in text."""
    tools = [TOOL] + rng.sample(OTHER_TOOLS, rng.randint(0, 1))
    rng.shuffle(tools)
    messages = [{"role": "developer", "content": DEVELOPER}] if rng.random() < 0.5 else []
    if rng.random() < 0.75:
        label = rng.choice(sorted(PRESETS))
        m = PRESETS[label]
        messages.append({"role": "user", "content": rng.choice(ASKS).format(label=label)})
        messages.append({"role": "assistant", "tool_calls": [{"type": "function", "function": {
            "name": FUNCTION, "arguments": {"minutes": m, "label": label}}}]})
    else:
        messages.append({"role": "user", "content": rng.choice(SMALL_TALK)})
        messages.append({"role": "assistant", "content": REPLY})
    return {"messages": messages, "tools": tools}


def dataset(n: int, seed: int) -> list[dict]:
    """``n`` examples, the same for the same seed."""
    rng = random.Random(seed)
    return [example(rng) for _ in range(n)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True, help="training JSONL to write")
    ap.add_argument("--heldout", help="held-out JSONL to write (another seed)")
    ap.add_argument("--n", type=int, default=240, help="training examples (default 240; held-out: a quarter)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    write_jsonl(a.train, dataset(a.n, a.seed))
    if a.heldout:
        write_jsonl(a.heldout, dataset(max(8, a.n // 4), a.seed + 1000))
    print(f"wrote {a.train}" + (f" and {a.heldout}" if a.heldout else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
