"""What a bench request says: the tool declarations, the shared developer turn, the questions; which models.

Every request's first turn is the same long developer turn with tool
declarations (the part prefix caching saves), then one of a few short user
questions.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Sequence

from lorafleet.tools.status import split_models

TOOL_SPECS = [
    ("get_weather", "Get the current weather for a city.", {"location": "City name, e.g. London"}),
    ("get_forecast", "Get the weather forecast for the next days.", {"location": "City name", "days": "1 to 7"}),
    ("run_sql", "Run one read-only SELECT statement on the sales database.", {"query": "The SQL text"}),
    ("create_event", "Add an event to the user's calendar.", {"title": "Short title", "date": "YYYY-MM-DD"}),
    ("list_events", "List calendar events between two dates.", {"start": "YYYY-MM-DD", "end": "YYYY-MM-DD"}),
    ("send_email", "Send an email on the user's behalf.", {"to": "Address", "subject": "Subject", "body": "Text"}),
    ("search_docs", "Search the internal documentation.", {"query": "Words to look for"}),
    ("convert_currency", "Convert an amount between currencies.",
     {"amount": "Number", "from_currency": "ISO code", "to_currency": "ISO code"}),
    ("set_timer", "Start a countdown timer.", {"minutes": "Whole minutes"}),
    ("translate", "Translate text into another language.", {"text": "Text", "target_language": "Language name"}),
    ("book_meeting_room", "Reserve a meeting room.", {"room": "Room name", "start": "ISO time", "minutes": "Length"}),
    ("get_stock_price", "Get the latest price of a listed share.", {"symbol": "Ticker symbol"}),
]

# FunctionGemma's developer turn is this sentence followed by the declarations
# (its chat template renders ``tools`` there); the rules after it add a little
# fixed text. Its length is set mostly by --prefix-tools.
DEVELOPER_TEXT = (
    "You are a model that can do function calling with the following functions. "
    "Answer with exactly one function call when a function fits the request, otherwise with one short "
    "sentence. Fill every required argument from the user's words; dates are YYYY-MM-DD."
)

QUESTIONS = [
    "What's the weather in London right now?",
    "Will it rain in Paris over the next three days?",
    "How many orders did we get from Germany last month?",
    "Put 'dentist' in my calendar for 2026-12-03.",
    "What's on my calendar next week, from 2026-12-07 to 2026-12-13?",
    "Email bob@example.com that the report is late.",
    "Find the docs about rotating the API key.",
    "How much is 250 euros in US dollars?",
    "Set a timer for 12 minutes.",
    "Translate 'good morning, team' into Spanish.",
    "Book the Aurora room at 2026-12-02T10:00 for 30 minutes.",
    "What is Nvidia's share price?",
    "Which five customers spent the most this year?",
    "Is it windy in Oslo?",
    "Remind me about the budget review on 2026-12-15.",
    "Convert 99.5 pounds to yen.",
    "Search the docs for how to add an adapter.",
    "What's the forecast for Madrid for 5 days?",
    "Send the team a note that the server is back up.",
    "What's the average order total per country?",
    "Translate 'thank you for waiting' into German.",
    "Set a 3 minute timer for the tea.",
    "What is the weather in Tokyo?",
    "List products cheaper than 10 dollars.",
]


def tool_declarations(count: int | None = None) -> list[dict[str, Any]]:
    """The OpenAI ``tools`` list every bench request declares (the first ``count`` of them)."""
    tools = []
    for name, description, params in TOOL_SPECS[:count]:
        tools.append({
            "type": "function",
            "function": {
                "name": name,
                "description": description,
                "parameters": {
                    "type": "object",
                    "properties": {k: {"type": "string", "description": v} for k, v in params.items()},
                    "required": list(params),
                },
            },
        })
    return tools


def build_messages(index: int, with_tools: bool, unique_prefix: bool,
                   tool_count: int | None = None) -> list[dict[str, str]]:
    """Messages of request ``index``: the shared developer turn, then one of the questions.

    With ``with_tools`` off the declarations are written into the developer turn
    as JSON, so the shared prefix stays as long. ``unique_prefix`` starts every
    developer turn with a fresh id, which defeats prefix caching (for comparison).
    """
    developer = DEVELOPER_TEXT
    if not with_tools and tool_count != 0:
        developer += "\n\nFunctions:\n" + json.dumps(tool_declarations(tool_count))
    if unique_prefix:
        developer = f"Session {uuid.uuid4().hex}. " + developer
    return [
        {"role": "system", "content": developer},
        {"role": "user", "content": QUESTIONS[index % len(QUESTIONS)]},
    ]


def resolve_models(models: str | None, adapters: str | None, listed: Sequence[dict[str, Any]]) -> list[str]:
    """Turn ``--models`` / ``--adapters`` into served model names, in order, without repeats.

    ``--models`` takes names and the words ``base``, ``all`` (base and every
    adapter), ``adapters`` (every adapter) and ``adapters:N`` (the first N).
    ``--adapters`` takes ``all``, a number N, or names. Neither given: ``all``.
    """
    base, adapter_names = split_models(listed)
    known = {m["id"] for m in listed}
    wanted: list[str] = []

    def add_adapters(n: int | None) -> None:
        if n is not None and n > len(adapter_names):
            raise ValueError(f"asked for {n} adapters but the server serves {len(adapter_names)}")
        wanted.extend(adapter_names[:n] if n is not None else adapter_names)

    for token in [t.strip() for t in (models or "").split(",") if t.strip()]:
        if token == "base":
            if base is None:
                raise ValueError("--models base: the server lists no base model")
            wanted.append(base)
        elif token == "all":
            wanted.extend([base] if base else [])
            add_adapters(None)
        elif token == "adapters":
            add_adapters(None)
        elif token.startswith("adapters:") and token.split(":", 1)[1].isdigit():
            add_adapters(int(token.split(":", 1)[1]))
        elif token in known:
            wanted.append(token)
        else:
            raise ValueError(
                f"--models: {token!r} is not served; served models: {', '.join(sorted(known)) or 'none'}"
            )
    if adapters:
        spec = adapters.strip()
        if spec == "all":
            add_adapters(None)
        elif spec.isdigit():
            add_adapters(int(spec))
        else:
            for name in [a.strip() for a in spec.split(",") if a.strip()]:
                if name not in adapter_names:
                    raise ValueError(
                        f"--adapters: {name!r} is not a served adapter; adapters: {', '.join(adapter_names) or 'none'}"
                    )
                wanted.append(name)
    if not models and not adapters:
        wanted.extend([base] if base else [])
        add_adapters(None)
    unique = list(dict.fromkeys(wanted))
    if not unique:
        raise ValueError("no model chosen: the server lists none, or the selection is empty")
    return unique

