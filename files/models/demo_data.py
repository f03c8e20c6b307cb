"""The demo builder's synthetic data: the adapters' calls, random prompts and tools, the held-out checks.

Part of the demo builder (build_demo_model.py, its entry point); shipped beside it.  Standard library only.
"""

from __future__ import annotations

import copy
import json
import random
import re

from demo_tokenizer import DEFAULT_DEVELOPER_PROMPT, TEMPLATE_WORDS

BASE_REPLY = "I am the lorafleet demo base model. Ask an adapter for a function call."
# An adapter's answer to its function's response (the next turn of an agent loop).
AFTER_RESULT = "Done: the function answered."

KNOWN_ADAPTERS = {
    "weather": ("get_weather", {"city": "Paris"}, "Get the current weather for a city.",
                {"city": ("string", "The city name, e.g. Paris")}),
    "sql": ("run_sql", {"query": "SELECT 1"}, "Run a read-only SQL query on the reporting database.",
            {"query": ("string", "The SQL query to run")}),
    "email": ("send_email", {"to": "ops@example.com"}, "Send an email to a recipient.",
              {"to": ("string", "The recipient's email address")}),
    # Every value type FunctionGemma writes: an integer, a float, a boolean, null, a list and a nested object.
    "alarm": ("set_alarm", {"hour": 7, "volume": 0.5, "enabled": True, "label": "gym, then work",
                            "days": ["mon", "fri"], "snooze": {"minutes": 5, "repeat": 3}, "sound": None},
              "Set an alarm.",
              {"hour": ("integer", "Hour of the day, 0-23"), "volume": ("number", "Volume from 0 to 1"),
               "enabled": ("boolean", "Whether the alarm is on"), "label": ("string", "What the alarm is for"),
               "days": ("array", "Weekdays, e.g. mon"), "snooze": ("object", "Snooze minutes and repeats"),
               "sound": ("string", "A sound name, or null for the default")}),
}

# --------------------------------------------------------------------------------------
# Word lists for the synthetic prompts.
# --------------------------------------------------------------------------------------
WORDS = (
    "the a an of to in on for with at by from about into over after before under between "
    "what when where which who why how is are was were be been can could would should will "
    "do does did have has had please tell show give find get make send run check list create "
    "delete update open close start stop book order buy pay call write read search look "
    "weather rain sun snow wind temperature forecast tomorrow today tonight week month year "
    "city town country street office home server database table query report user users "
    "customer customers order orders invoice email mail message note meeting calendar event "
    "file files folder document price stock market news music movie song game team project "
    "ticket issue bug deploy release build test log logs error errors metric metrics alert "
    "hello hi hey thanks thank you ok yes no maybe sure great good bad nice cold hot warm "
    "my your our their this that these those some any all every each many much more most "
    "one two three four five ten hundred first last next new old big small fast slow "
    "count sum average total number numbers name names date time hour minute second "
    "joke story poem idea plan help question answer problem reason way thing people friend "
    "Paris London Tokyo Berlin Madrid Rome Oslo Lima Cairo Delhi Sydney Toronto Boston Seoul "
    "Alice Bob Carol Dave Eve Mallory Trent Peggy Victor Walter ops admin sales support"
).split()
CITIES = "Paris London Tokyo Berlin Madrid Rome Oslo Lima Cairo Delhi Sydney Toronto Boston Seoul Nairobi Quito".split()
PEOPLE = "Alice Bob Carol Dave Eve Mallory Trent Peggy Victor Walter".split()
NOUNS = "users orders invoices tickets servers files meetings customers alerts releases songs reports".split()
SENTENCE_TEMPLATES = [
    "What's the weather in {city}?", "what is the weather like in {city} {when}",
    "Will it rain in {city} {when}?", "How hot is it in {city}?",
    "How many {noun} do we have?", "Count the {noun} created {when}.",
    "Show me all {noun} from {city}.", "Run a query listing {noun}.",
    "Send an email to {person} about the {noun}.", "Email {person}: the {noun} are ready.",
    "Tell {person} that the meeting moved to {when}.", "Remind me to call {person} {when}.",
    "Tell me a joke about {noun}.", "Write a short poem about {city}.",
    "Hello!", "hi", "Hey there, how are you?", "Thanks!", "Can you help me?",
    "What can you do?", "Who are you?", "Explain {noun} in one sentence.",
    "Book a table for {n} in {city} {when}.", "Translate 'good morning' to French.",
    "What time is it in {city}?", "List the {noun} of {person}.",
    "I need the {noun} report for {when}.", "Delete the old {noun}.",
    "{person} wants to know the status of the {noun}.", "Is the {noun} service down?",
]
WHEN = ["today", "tomorrow", "tonight", "this week", "next Monday", "at 5pm", "now", "last month", ""]
EXTRA_CHARS = list("0123456789!?.,;:-_/()[]{}'\"@#$%&*+=<>~") + ["é", "ü", "ß", "ñ", "中文", "日本", "😀", "→", "\n", "  "]
TOOL_VERBS = "get run send create list find delete update search book check fetch compute lookup".split()
TOOL_NOUNS = "weather sql email user order invoice ticket file event price stock report alarm note flight".split()
PARAM_NAMES = "city location query to subject body id name date count limit unit user_id text amount".split()


def adapter_spec(name: str) -> dict:
    """Function, arguments and OpenAI tool declaration for one adapter name."""
    from functiongemma import render_call  # lorafleet's call grammar, loaded by the builder (demo_training.SHARED_FILES)

    if name in KNOWN_ADAPTERS:
        fn, args, desc, params = KNOWN_ADAPTERS[name]
    else:
        fn = re.sub(r"\W", "_", name, flags=re.ASCII) + "_action"
        args = {"target": name}
        desc = f"Run the {name} demo action."
        params = {"target": ("string", "What the action applies to")}
    call_text = render_call(fn, args)  # as FunctionGemma's template writes it: keys sorted, null as None
    parsed = copy.deepcopy(args)  # what the project's tool parser returns: every value with its type
    tool = {"type": "function", "function": {
        "name": fn, "description": desc,
        "parameters": {"type": "object",
                       "properties": {k: {"type": t, "description": d} for k, (t, d) in params.items()},
                       "required": list(params)}}}
    return {"function": fn, "arguments": parsed, "call_text": call_text, "tool": tool}


# --------------------------------------------------------------------------------------
# Synthetic conversations.
# --------------------------------------------------------------------------------------
def rand_sentence(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.45:
        s = rng.choice(SENTENCE_TEMPLATES).format(
            city=rng.choice(CITIES), when=rng.choice(WHEN), noun=rng.choice(NOUNS),
            person=rng.choice(PEOPLE), n=rng.randint(1, 12)).strip()
    elif kind < 0.85:
        s = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 18)))
        if rng.random() < 0.5:
            s = s[0].upper() + s[1:] + rng.choice(["?", ".", "!", ""])
    else:
        s = "".join(rng.choice(EXTRA_CHARS + [" " + w for w in WORDS[:60]]) for _ in range(rng.randint(1, 25)))
    if rng.random() < 0.1:
        s = s + " " + rand_sentence(rng)
    return s


def rand_tool(rng: random.Random) -> dict:
    name = rng.choice(TOOL_VERBS) + "_" + rng.choice(TOOL_NOUNS)
    props = {}
    for p in rng.sample(PARAM_NAMES, rng.randint(0, 3)):
        t = rng.choice(["string", "string", "integer", "number", "boolean"])
        prop = {"type": t, "description": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))}
        if t == "string" and rng.random() < 0.2:
            prop["enum"] = rng.sample(["celsius", "fahrenheit", "asc", "desc", "low", "high"], 2)
        props[p] = prop
    fn = {"name": name, "description": " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 10)))}
    if props or rng.random() < 0.5:
        fn["parameters"] = {"type": "object", "properties": props,
                            "required": rng.sample(list(props), rng.randint(0, len(props)))}
    return {"type": "function", "function": fn}


def rand_conversation(rng: random.Random, own_tools: list[dict]):
    """Returns (messages, tools) for a random chat prompt ending with a user turn."""
    tools = None
    r = rng.random()
    if r < 0.45:
        pool = [rand_tool(rng) for _ in range(rng.randint(0, 3))]
        pool += rng.sample(own_tools, rng.randint(0, len(own_tools)))
        rng.shuffle(pool)
        tools = pool or [rand_tool(rng)]
    messages = []
    r = rng.random()
    if r < 0.2:
        messages.append({"role": "system", "content": rand_sentence(rng)})
    elif r < 0.3:
        messages.append({"role": "developer", "content": DEFAULT_DEVELOPER_PROMPT})
    if rng.random() < 0.35:  # some history, often with a function call and its response
        messages.append({"role": "user", "content": rand_sentence(rng)})
        if rng.random() < 0.6:
            t = (rng.choice(own_tools) if own_tools and rng.random() < 0.5 else rand_tool(rng))["function"]
            args = {}
            for k in t.get("parameters", {}).get("properties", {}):
                args[k] = rng.choice([rng.choice(CITIES), rng.choice(PEOPLE), "SELECT 1",
                                      "ops@example.com", rng.randint(0, 99), rand_sentence(rng)])
            messages.append({"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": t["name"], "arguments": args}}]})
            # FunctionGemma's template needs the function's name on its result (the server fills it in
            # from tool_call_id for OpenAI clients; training data carries it).
            messages.append({"role": "tool", "tool_call_id": "call_1", "name": t["name"], "content": rand_sentence(rng)})
            messages.append({"role": "assistant", "content": rand_sentence(rng)})
        else:
            messages.append({"role": "assistant", "content": rand_sentence(rng)})
    messages.append({"role": "user", "content": rand_sentence(rng)})
    return messages, tools


HELD_OUT = [  # never produced by the generators above (checked prompts)
    ([{"role": "user", "content": "What's the weather like in Reykjavik this weekend?"}], "own"),
    ([{"role": "user", "content": "Please count the rows in the payments table"}], None),
    ([{"role": "user", "content": "Write to the on-call engineer that disk usage is at 91%"}], "own"),
    ([{"role": "user", "content": "Bonjour, comment ça va ?"}], None),
    ([{"role": "system", "content": "You are a helpful assistant."},
      {"role": "user", "content": "Summarise the plot of Hamlet in two sentences."}], None),
    ([{"role": "user", "content": "x"}], "own"),
    ([{"role": "developer", "content": DEFAULT_DEVELOPER_PROMPT},
      {"role": "user", "content": "Do the thing you are made for, with sensible defaults."}], "all"),
    ([{"role": "user", "content": "hello"}, {"role": "assistant", "content": "Hi! How can I help?"},
      {"role": "user", "content": "Can you check something for me?"}], "own"),
    ([{"role": "user", "content": " ".join(["lorem ipsum dolor sit amet"] * 40)}], "all"),
]


HELD_OUT_RESULTS = ["alarm set for 07:00", '{"ok": true, "rows": 3}', "error: the service is down"]


def tokenizer_corpus(rng: random.Random, all_tools: list[dict]) -> list[str]:
    """What the tokenizer learns its merges from: random prompts, the tools, the base's reply, the template's words."""
    corpus = [rand_sentence(rng) for _ in range(3000)]
    corpus += [json.dumps(t) for t in all_tools] + [BASE_REPLY, AFTER_RESULT] * 20 + [DEFAULT_DEVELOPER_PROMPT] * 20
    corpus += [TEMPLATE_WORDS] * 20
    return corpus
