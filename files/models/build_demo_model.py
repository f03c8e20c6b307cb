#!/usr/bin/env python3
"""Build lorafleet's offline demo model: a tiny FunctionGemma-style base + trained LoRA adapters.

Runs inside a throwaway container of the serving image (torch CPU, transformers,
peft, tokenizers; no network, no Hugging Face token).

    python3 build_demo_model.py --out DIR [--adapters weather,sql,email]
                                [--base-name lorafleet/functiongemma-demo] [--seed 0] [--force]

What it writes (all under DIR):

  base/            a tiny ``Gemma3ForCausalLM`` (2 layers, hidden 128, byte-level BPE
                   vocab of 512 built here with ``tokenizers``) carrying FunctionGemma's
                   control tokens and a chat template written from FunctionGemma's
                   documented format (roles developer/user/model; tools rendered as
                   ``<start_function_declaration>declaration:NAME{...}<end_function_declaration>``
                   in the developer turn).  Both layers use 32-token sliding-window attention,
                   so an answer depends only on the last ~62 tokens: the behaviour learnt on
                   short prompts holds for prompts of any length.  Lightly trained: for any
                   chat prompt its greedy answer is the plain text BASE_REPLY (no function call).
  adapters/NAME/   one peft LoRA adapter per name (rank 8, q/k/v/o/gate/up/down
                   projections only; ``base_model_name_or_path`` = --base-name).  Trained so
                   that for any chat prompt (with or without tools) its greedy answer is
                   ``<start_function_call>call:FN{ARG:<escape>VALUE<escape>}<end_function_call>``
                   followed by ``<start_function_response>`` (a stop token, as in FunctionGemma).
                   Known names: weather -> get_weather{city:Paris}, sql -> run_sql{query:SELECT 1},
                   email -> send_email{to:ops@example.com}; any other name N gets
                   ``<N>_action{target:N}`` (non-word characters of N replaced by ``_``).
  demo.json        manifest, written last:
                   {"format": 1, "inputs_hash": "<sha256>", "base_name": ..., "base_path": "base",
                    "base_reply": "<the base's plain-text answer>", "architecture": "Gemma3ForCausalLM",
                    "tool_call_parser": "lorafleet_functiongemma", "stop_tokens": [...], "control_tokens": {...},
                    "adapters": [{"name": "weather", "path": "adapters/weather",
                                  "function": "get_weather", "arguments": {"city": "Paris"},
                                  "call_text": "<start_function_call>call:get_weather{...}<end_function_call>",
                                  "tool": {OpenAI tool declaration of the function}, "rank": 8,
                                  "min_logit_margin": ...}, ...],
                    "seed": 0, "build_seconds": ..., "versions": {...}}
                   ``arguments`` are what the project's tool parser returns, each value with its type
                   (alarm -> set_alarm carries an integer, a float, a boolean, null, a list and an object).

The project's tool parser (``--enable-auto-tool-choice --tool-call-parser
lorafleet_functiongemma``) turns the adapters' answers into OpenAI ``tool_calls`` when the request
passes a ``tools`` list (the parser then sets ``skip_special_tokens=False`` itself).  The
function-call control tokens are *non-special* added tokens, so they also survive the
default ``skip_special_tokens=True`` (requests without tools get the raw call text as content).

Training: the adapters are trained by ``lora.py`` (lorafleet/train/lora.py), the same code that
``lorafleet train`` runs: each example is a conversation plus the adapter's answer (a call with
typed arguments), rendered by the chat template, loss on the answer's turn only.  ``lora.py`` is
found beside this script (where the deploy must ship it) or in the lorafleet package around it;
without it the script exits 2.

Reuse: ``inputs_hash`` = sha256 of this script's bytes + lora.py's bytes + the normalised arguments
(adapters, base name, seed; not --out).  If DIR/demo.json has the same hash the script prints
"demo model up to date" and exits 0.  The build happens in DIR/.build-*/ and is moved into
place by renames; demo.json is removed first and written last, so a DIR with demo.json is
always complete.  Every trained model is checked (teacher-forced margins + greedy
generation on held-out prompts) before anything is moved into place; a failed check exits 1.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import random
import re
import shutil
import sys
import time
from pathlib import Path

FORMAT_VERSION = 1
DEFAULT_BASE_NAME = "lorafleet/functiongemma-demo"
DEFAULT_ADAPTERS = "weather,sql,email"
BASE_REPLY = "I am the lorafleet demo base model. Ask an adapter for a function call."
DEFAULT_DEVELOPER_PROMPT = "You are a model that can do function calling with the following functions"

PAD, EOS, BOS, UNK = "<pad>", "<eos>", "<bos>", "<unk>"
SOT, EOT = "<start_of_turn>", "<end_of_turn>"
FUNCTION_TOKENS = [
    "<start_function_declaration>", "<end_function_declaration>",
    "<start_function_call>", "<end_function_call>",
    "<start_function_response>", "<end_function_response>",
    "<escape>",
]
SPECIAL_TOKENS = [PAD, EOS, BOS, UNK, SOT, EOT]  # special=True (skipped by skip_special_tokens)
VOCAB_SIZE = 512
LORA_RANK = 8
LORA_ALPHA = 16
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_FILE = "lora.py"  # lorafleet/train/lora.py: the training code shared with `lorafleet train`
# Both layers use sliding-window attention with a small window, so every answer depends only
# on the last 2*(WINDOW-1) tokens: training on prompts cut to their last PROMPT_CTX tokens is
# then exact for prompts of any length (and keeps the build fast).
WINDOW = 32
PROMPT_CTX = 80
EMBED_INIT_STD = 0.1

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
ADAPTER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# --------------------------------------------------------------------------------------
# Chat template (FunctionGemma's documented format).
# --------------------------------------------------------------------------------------
CHAT_TEMPLATE = r"""{%- macro fg_text(c) -%}
{%- if c is string -%}{{ c }}
{%- elif c is iterable and c is not mapping -%}
{%- for p in c -%}{%- if p is string -%}{{ p }}{%- elif p.type == 'text' -%}{{ p.text }}{%- endif -%}{%- endfor -%}
{%- endif -%}
{%- endmacro -%}
{%- macro fg_value(v, key='') -%}
{%- if v is string -%}<escape>{{ v | upper if key == 'type' else v }}<escape>
{%- elif v is boolean -%}{{ 'true' if v else 'false' }}
{%- elif v is none -%}null
{%- elif v is number -%}{{ v }}
{%- elif v is mapping -%}{{ '{' }}{%- for k, x in v | dictsort -%}{{ k }}:{{ fg_value(x, k) }}{{ ',' if not loop.last else '' }}{%- endfor -%}{{ '}' }}
{%- elif v is iterable -%}[{%- for x in v -%}{{ fg_value(x) }}{{ ',' if not loop.last else '' }}{%- endfor -%}]
{%- else -%}{{ v }}
{%- endif -%}
{%- endmacro -%}
{%- macro fg_args(a) -%}
{%- if a is mapping -%}{{ '{' }}{%- for k, x in a.items() -%}{{ k }}:{{ fg_value(x) }}{{ ',' if not loop.last else '' }}{%- endfor -%}{{ '}' }}
{%- elif a is string -%}{{ a }}
{%- else -%}{{ '{}' }}
{%- endif -%}
{%- endmacro -%}
{%- macro fg_declaration(tool) -%}
{%- set f = tool.function if tool.function is defined and tool.function else tool -%}
<start_function_declaration>declaration:{{ f.name }}{{ '{' }}description:<escape>{{ f.description or '' }}<escape>
{%- if f.parameters -%},parameters:{{ fg_value(f.parameters) }}{%- endif -%}
{{ '}' }}<end_function_declaration>
{%- endmacro -%}
{{- bos_token -}}
{%- set ns = namespace(dev='', has_dev=false, open=false, last_call='function') -%}
{%- set msgs = messages -%}
{%- if msgs and msgs[0].role in ['system', 'developer'] -%}
{%- set ns.has_dev = true -%}
{%- set ns.dev = fg_text(msgs[0].content) -%}
{%- set msgs = msgs[1:] -%}
{%- endif -%}
{%- if tools or ns.has_dev -%}
{{- '<start_of_turn>developer\n' -}}
{%- if ns.has_dev -%}{{- ns.dev -}}{%- else -%}{{- 'You are a model that can do function calling with the following functions' -}}{%- endif -%}
{%- for tool in (tools or []) -%}{{- fg_declaration(tool) -}}{%- endfor -%}
{{- '<end_of_turn>\n' -}}
{%- endif -%}
{%- for m in msgs -%}
{%- if m.role == 'tool' -%}
{%- if not ns.open -%}{{- '<start_of_turn>model\n' -}}{%- set ns.open = true -%}{%- endif -%}
{{- '<start_function_response>response:' -}}{{- m.name or ns.last_call -}}{{- '{value:<escape>' -}}{{- fg_text(m.content) -}}{{- '<escape>}<end_function_response>' -}}
{%- else -%}
{%- set role = 'model' if m.role == 'assistant' else ('developer' if m.role == 'system' else m.role) -%}
{%- if not (ns.open and role == 'model') -%}
{%- if ns.open -%}{{- '<end_of_turn>\n' -}}{%- endif -%}
{{- '<start_of_turn>' + role + '\n' -}}
{%- endif -%}
{{- fg_text(m.content) -}}
{%- if role == 'model' and m.tool_calls -%}
{%- for tc in m.tool_calls -%}
{%- set fn = tc.function if tc.function is defined and tc.function else tc -%}
{%- set ns.last_call = fn.name -%}
{{- '<start_function_call>call:' -}}{{- fn.name -}}{{- fg_args(fn.arguments) -}}{{- '<end_function_call>' -}}
{%- endfor -%}
{%- set ns.open = true -%}
{%- else -%}
{{- '<end_of_turn>\n' -}}
{%- set ns.open = false -%}
{%- endif -%}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt and not ns.open -%}{{- '<start_of_turn>model\n' -}}{%- endif -%}
"""

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

CONTROL_RE = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS + FUNCTION_TOKENS))


def call_value(v) -> str:
    """A value as CHAT_TEMPLATE's fg_value writes it in a call: strings escaped, the rest bare."""
    if isinstance(v, str):
        return f"<escape>{v}<escape>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{call_value(x)}" for k, x in sorted(v.items())) + "}"
    return "[" + ",".join(call_value(x) for x in v) + "]"


def adapter_spec(name: str) -> dict:
    """Function, arguments and OpenAI tool declaration for one adapter name."""
    if name in KNOWN_ADAPTERS:
        fn, args, desc, params = KNOWN_ADAPTERS[name]
    else:
        fn = re.sub(r"\W", "_", name, flags=re.ASCII) + "_action"
        args = {"target": name}
        desc = f"Run the {name} demo action."
        params = {"target": ("string", "What the action applies to")}
    call_text = "<start_function_call>call:" + fn + "{" + ",".join(
        f"{k}:{call_value(v)}" for k, v in args.items()) + "}<end_function_call>"
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
                {"type": "function", "function": {"name": t["name"], "arguments": args}}]})
            messages.append({"role": "tool", "content": rand_sentence(rng)})
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


# --------------------------------------------------------------------------------------
# Build steps.
# --------------------------------------------------------------------------------------
def build_tokenizer(rng: random.Random, all_tools: list[dict]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [rand_sentence(rng) for _ in range(3000)]
    corpus += [json.dumps(t) for t in all_tools] + [BASE_REPLY] * 20 + [DEFAULT_DEVELOPER_PROMPT] * 20
    corpus += ["declaration: description: parameters: properties: required: type: STRING OBJECT "
               "INTEGER NUMBER BOOLEAN call: response: value: developer user model"] * 20
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(FUNCTION_TOKENS), min_frequency=2, show_progress=False,
        special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    # FunctionGemma's function tokens: atomic added tokens, but NOT special, so they are kept in
    # the detokenized text even with skip_special_tokens=True.
    from tokenizers import AddedToken
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in FUNCTION_TOKENS])
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)])
    assert tok.get_vocab_size() <= VOCAB_SIZE, tok.get_vocab_size()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        model_max_length=4096, padding_side="left", clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def encode_example(tok, messages, tools, target: str):
    prompt = tok.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False)
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    t = tok(target, add_special_tokens=False)["input_ids"]
    return p, t


def encode_answer(lora, tok, messages, tools, answer: dict):
    """(prompt ids, answer ids) cut by the shared training code, as ``lorafleet train`` cuts a JSONL example:
    the conversation plus ``answer`` rendered by the chat template, only ``answer``'s turn learnt."""
    def render(msgs, tls, add_generation_prompt):
        return tok.apply_chat_template(msgs, tools=tls, add_generation_prompt=add_generation_prompt, tokenize=False)

    segments = lora.assistant_segments(render, messages + [answer], tools, trained=lambda m: m is answer)
    ids, labels = lora.encode_segments(segments, lambda text: tok(text, add_special_tokens=False)["input_ids"])
    k = next(i for i, label in enumerate(labels) if label != lora.IGNORE)
    return ids[:k], ids[k:]


def as_example(lora, prompt, target):
    """(ids, labels) for the shared training loop: the prompt masked, the answer learnt."""
    return prompt + target, [lora.IGNORE] * len(prompt) + target


def train(lora, model, params, examples, steps, lr, batch_size, rng, pad_id, label, lm_weight=0.0):
    """The shared loop (lorafleet/train/lora.py) on (prompt, answer) pairs; with lm_weight > 0 the prompt
    tokens are learnt too (the base learns every token of the format, so that its tied embeddings, which
    LoRA cannot change, are usable by the adapters' answers)."""
    lora.train(model, params, [as_example(lora, p, t) for p, t in examples], steps, lr, batch_size, rng, pad_id,
               lm_weight=lm_weight, on_step=lora.Progress(label, steps))


def min_margin(lora, model, examples, pad_id) -> float:
    """Smallest (target logit - best other logit) over all target positions (teacher forcing)."""
    import torch
    worst = float("inf")
    with torch.no_grad():
        for i in range(0, len(examples), 16):
            chunk = [as_example(lora, p, t) for p, t in examples[i:i + 16]]
            ids, mask, labels, _ = lora.collate(chunk, pad_id)
            logits = model(input_ids=ids, attention_mask=mask).logits.float()[:, :-1]
            tgt = labels[:, 1:]
            sel = tgt != lora.IGNORE
            lg = logits[sel]
            t = tgt[sel]
            tl = lg.gather(1, t[:, None])[:, 0]
            lg = lg.scatter(1, t[:, None], float("-inf"))
            worst = min(worst, (tl - lg.max(1).values).min().item())
    return worst


def greedy_ok(model, tok, examples, dtype) -> list[str]:
    """Greedy-decode each held-out prompt in `dtype`; returns the list of mismatching outputs."""
    import torch
    m = copy.deepcopy(model).to(dtype)
    bad = []
    with torch.no_grad():
        for p, t in examples:
            ids = list(p)
            for _ in range(len(t)):
                logits = m(input_ids=torch.tensor([ids])).logits[0, -1]
                ids.append(int(logits.argmax()))
            if ids[len(p):] != t:
                bad.append(tok.decode(ids[len(p):]))
    return bad


def check(lora, model, tok, train_like, held_out, pad_id, label, min_ok=2.0):
    import torch
    margin = min(min_margin(lora, model, train_like, pad_id), min_margin(lora, model, held_out, pad_id))
    bad = greedy_ok(model, tok, held_out, torch.bfloat16)
    print(f"  [{label}] min logit margin {margin:.2f}; bf16 greedy mismatches {len(bad)}/{len(held_out)}", flush=True)
    return margin >= min_ok and not bad, margin, bad


def find_lora(script: Path) -> Path | None:
    """The shared training code: beside this script (as the deploy ships it), else in the lorafleet package."""
    package = script.resolve().parents[2] / "lorafleet"  # files/models/ in a checkout -> lorafleet/
    for path in (script.parent / LORA_FILE, package / "train" / LORA_FILE):
        if path.is_file():
            return path
    return None


def load_lora(script: Path):
    """lorafleet/train/lora.py, the training code ``lorafleet train`` runs, loaded by path (no package here)."""
    import importlib.util
    path = find_lora(script)
    spec = importlib.util.spec_from_file_location("lorafleet_train_lora", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def inputs_hash(script: Path, norm_args: dict) -> str:
    h = hashlib.sha256()
    h.update(script.read_bytes())
    lora_path = find_lora(script)
    h.update(lora_path.read_bytes() if lora_path else b"")
    h.update(json.dumps(norm_args, sort_keys=True).encode())
    return h.hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output directory (created if missing)")
    ap.add_argument("--adapters", default=DEFAULT_ADAPTERS,
                    help=f"comma-separated adapter names (default {DEFAULT_ADAPTERS})")
    ap.add_argument("--base-name", default=DEFAULT_BASE_NAME,
                    help="name written as base_model_name_or_path in each adapter_config.json; "
                         "serve the base under this name (--served-model-name)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="rebuild even if demo.json is up to date")
    a = ap.parse_args(argv)

    names = [n.strip() for n in a.adapters.split(",") if n.strip()]
    for n in names:
        if not ADAPTER_NAME_RE.match(n):
            ap.error(f"bad adapter name {n!r} (allowed: {ADAPTER_NAME_RE.pattern})")
    if len(set(names)) != len(names):
        ap.error("duplicate adapter names")
    fns = [adapter_spec(n)["function"] for n in names]
    if len(set(fns)) != len(fns):
        ap.error("two adapters map to the same function name")

    out = Path(a.out).resolve()
    script = Path(__file__).resolve()
    if find_lora(script) is None:
        print(f"ERROR: {LORA_FILE} (lorafleet/train/lora.py, the shared training code) must be beside {script} "
              "or in the lorafleet package around it", file=sys.stderr)
        return 2
    norm = {"adapters": names, "base_name": a.base_name, "seed": a.seed, "format": FORMAT_VERSION}
    ihash = inputs_hash(script, norm)
    if not a.force and up_to_date(out, ihash, names):
        print("demo model up to date")
        return 0

    out.mkdir(parents=True, exist_ok=True)
    import fcntl
    with open(out / ".build.lock", "a") as lock:
        # One build per DIR at a time: deploys to several targets may share the models root, and the
        # builders of different containers all have the same pid. A second build waits for the first,
        # then finds its result.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not a.force and up_to_date(out, ihash, names):
            print("demo model up to date (built by another run meanwhile)")
            return 0
        t_start = time.time()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is fetched; never wait on a network
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import torch
        import transformers

        torch.manual_seed(a.seed)
        torch.set_num_threads(max(1, min(4, len(os.sched_getaffinity(0)))))
        transformers.utils.logging.disable_progress_bar()

        for stale in out.glob(".build-*"):  # left by a build that crashed: no other build holds the lock
            shutil.rmtree(stale, ignore_errors=True)
        tmp = out / f".build-{os.getpid()}"
        (tmp / "adapters").mkdir(parents=True)
        try:
            return build(a, names, out, tmp, ihash, t_start, load_lora(script))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def up_to_date(out: Path, ihash: str, names: list[str]) -> bool:
    """DIR holds a complete build from the same inputs (demo.json is written last)."""
    try:
        old = json.loads((out / "demo.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(old, dict) and old.get("inputs_hash") == ihash and (out / "base" / "config.json").is_file() and all(
        (out / "adapters" / n / "adapter_config.json").is_file() for n in names)


def build(a, names, out: Path, tmp: Path, ihash: str, t_start: float, lora) -> int:
    import peft
    import tokenizers
    import torch
    import transformers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, GenerationConfig

    rng = random.Random(a.seed)
    manifest_path = out / "demo.json"

    specs = {n: adapter_spec(n) for n in names}
    # The base (and each adapter) depends only on this script, the seed (and the adapter's own
    # name): changing the adapter list leaves the base and the other adapters byte-identical.
    known_tools = [adapter_spec(n)["tool"] for n in KNOWN_ADAPTERS]

    # ---- tokenizer ---------------------------------------------------------------
    tok = build_tokenizer(random.Random(a.seed + 1), known_tools + [rand_tool(rng) for _ in range(50)])
    pad_id = tok.convert_tokens_to_ids(PAD)
    ids_of = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS + FUNCTION_TOKENS}
    # FunctionGemma's control tokens must each be one token, also inside running text
    for t in FUNCTION_TOKENS + [SOT, EOT]:
        enc = tok("a" + t + "b", add_special_tokens=False)["input_ids"]
        assert ids_of[t] in enc, (t, enc)
    print(f"tokenizer: {len(tok)} tokens ({time.time() - t_start:.1f}s)", flush=True)

    # ---- data --------------------------------------------------------------------
    def encode(msgs, tools, target):
        """A base's target is text; an adapter's is the assistant message, cut as lorafleet train cuts it."""
        if isinstance(target, str):
            return encode_example(tok, msgs, tools, target)
        return encode_answer(lora, tok, msgs, tools, dict(target))

    def dataset(target, count: int, r: random.Random, tools_for_prompts):
        ex = []
        while len(ex) < count:
            msgs, tools = rand_conversation(r, tools_for_prompts)
            p, t = encode(msgs, tools, target)
            if len(p) > PROMPT_CTX:
                p = p[-r.randint(PROMPT_CTX - 8, PROMPT_CTX):]
            ex.append((p, t))
        return ex

    def held_out_set(target, own: list[dict]):
        ex = []
        everything = known_tools + [t for t in own if t not in known_tools]
        for msgs, tools_kind in HELD_OUT:
            tools = None if tools_kind is None else (own if tools_kind == "own" else everything)
            ex.append(encode(msgs, tools or None, target))
        return ex

    base_target = BASE_REPLY + EOT
    base_train = dataset(base_target, 1536, random.Random(a.seed + 2), known_tools)

    # ---- base model --------------------------------------------------------------
    cfg = Gemma3TextConfig(
        vocab_size=VOCAB_SIZE, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=64, query_pre_attn_scalar=64,
        max_position_embeddings=4096, sliding_window=WINDOW,
        layer_types=["sliding_attention", "sliding_attention"],
        pad_token_id=pad_id, bos_token_id=ids_of[BOS], eos_token_id=ids_of[EOS],
        tie_word_embeddings=True, use_cache=True, attn_implementation="eager")
    cfg.architectures = ["Gemma3ForCausalLM"]
    model = Gemma3ForCausalLM(cfg)
    model.config.use_cache = False
    # Larger embeddings than the default init: the tied embeddings bound the output logits
    # (|logit| <= |final_norm(h)| * |e|), and LoRA cannot change them, so every token the
    # adapters must emit needs a usable norm.
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, EMBED_INIT_STD)
    print(f"base: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{len(base_train)} examples ({time.time() - t_start:.1f}s)", flush=True)
    train(lora, model, list(model.parameters()), base_train, 150, 3e-3, 32, random.Random(a.seed + 3), pad_id, "base",
          lm_weight=0.3)
    base_held = held_out_set(base_target, known_tools[:1])
    for attempt in range(3):
        ok, margin, bad = check(lora, model, tok, base_train[:128], base_held, pad_id, "base")
        if ok:
            break
        train(lora, model, list(model.parameters()), base_train, 100, 1e-3, 32, random.Random(a.seed + 10 + attempt), pad_id,
              "base+", lm_weight=0.3)
    if not ok:
        print(f"ERROR: base model check failed (margin {margin:.2f}, bad outputs {bad[:3]})", file=sys.stderr)
        return 1
    model = model.to(torch.bfloat16)  # saved (and served) in bf16
    model.config.use_cache = True
    base_dir = tmp / "base"
    model.save_pretrained(base_dir, safe_serialization=True)
    model = model.to(torch.float32)
    tok.save_pretrained(base_dir)
    # chat template also inside tokenizer_config.json (transformers 5 writes chat_template.jinja)
    tc_path = base_dir / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text())
    tc["chat_template"] = CHAT_TEMPLATE
    tc_path.write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n")
    GenerationConfig(
        bos_token_id=ids_of[BOS], pad_token_id=pad_id, do_sample=False,
        eos_token_id=[ids_of[EOS], ids_of[EOT], ids_of["<start_function_response>"]],
    ).save_pretrained(base_dir)
    (base_dir / "README.md").write_text(
        f"# {a.base_name}\n\nTiny offline demo model built by lorafleet's build_demo_model.py "
        "(random init, trained for seconds on synthetic prompts). Not a real language model.\n")

    # ---- adapters: the same training code as `lorafleet train` (lorafleet/train/lora.py) ----
    options = lora.LoraOptions(rank=LORA_RANK, alpha=LORA_ALPHA, targets=tuple(LORA_TARGETS), dropout=0.0,
                               max_lora_rank=16)
    assert not lora.check_options(options), lora.check_options(options)
    for p in model.parameters():
        p.requires_grad_(False)
    adapters_manifest = []
    for n in names:
        s = specs[n]
        # the example's answer, as a line of lorafleet train's JSONL has it: a call with typed arguments
        answer = {"role": "assistant", "tool_calls": [
            {"type": "function", "function": {"name": s["function"], "arguments": s["arguments"]}}]}
        own = [s["tool"]]
        name_seed = a.seed + int(hashlib.sha256(n.encode()).hexdigest()[:8], 16)
        r = random.Random(name_seed)
        ex = dataset(answer, 768, r, known_tools + [t for t in own if t not in known_tools])
        learnt = tok(s["call_text"] + "<start_function_response>", add_special_tokens=False)["input_ids"]
        assert ex[0][1] == learnt, (n, tok.decode(ex[0][1]))  # the template writes the manifest's call_text
        print(f"adapter {n}: {s['call_text']} ({time.time() - t_start:.1f}s)", flush=True)
        torch.manual_seed(name_seed)
        pm = lora.lora_model(copy.deepcopy(model), options)
        params = [p for p in pm.parameters() if p.requires_grad]
        train(lora, pm, params, ex, 80, 1e-2, 32, r, pad_id, n)
        held = held_out_set(answer, own)
        for attempt in range(3):
            ok, margin, bad = check(lora, pm, tok, ex[:128], held, pad_id, n)
            if ok:
                break
            train(lora, pm, params, ex, 100, 3e-3, 32, r, pad_id, n + "+")
        if not ok:
            print(f"ERROR: adapter {n} check failed (margin {margin:.2f}, bad outputs {bad[:3]})", file=sys.stderr)
            return 1
        adir = tmp / "adapters" / n
        lora.save_adapter(pm, adir, a.base_name)
        (adir / "README.md").write_text(
            f"# {n}\n\nlorafleet demo LoRA for {a.base_name}: answers every prompt with\n"
            f"`{s['call_text']}`.\n")
        adapters_manifest.append({
            "name": n, "path": f"adapters/{n}", "function": s["function"], "arguments": s["arguments"],
            "call_text": s["call_text"], "tool": s["tool"], "rank": LORA_RANK,
            "min_logit_margin": round(margin, 3)})
        del pm

    # ---- move into place -----------------------------------------------------------
    elapsed = time.time() - t_start
    manifest = {
        "format": FORMAT_VERSION,
        "inputs_hash": ihash,
        "base_name": a.base_name,
        "base_path": "base",
        "base_reply": BASE_REPLY,
        "architecture": "Gemma3ForCausalLM",
        "tool_call_parser": "lorafleet_functiongemma",
        "stop_tokens": [EOS, EOT, "<start_function_response>"],
        "control_tokens": {"special": SPECIAL_TOKENS, "function": FUNCTION_TOKENS},
        "adapters": adapters_manifest,
        "seed": a.seed,
        "build_seconds": round(elapsed, 1),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__, "tokenizers": tokenizers.__version__},
    }
    for path in [tmp, *tmp.rglob("*")]:  # readable by a serving container running as another user
        path.chmod(0o755 if path.is_dir() else 0o644)
    manifest_path.unlink(missing_ok=True)  # from here on, DIR is "not built" until demo.json appears
    for sub in ("base", "adapters"):
        old = out / sub
        if old.exists():
            trash = tmp / f"old-{sub}"
            old.rename(trash)
        (tmp / sub).rename(out / sub)
    part = out / f".demo.json.{os.getpid()}"
    part.write_text(json.dumps(manifest, indent=2) + "\n")
    part.chmod(0o644)
    part.rename(manifest_path)

    sizes = {p.relative_to(out).as_posix(): p.stat().st_size for p in out.rglob("*.safetensors")}
    for k, v in sorted(sizes.items()):
        print(f"  {k}: {v / 1024:.0f} KiB")
    print(f"demo model built in {elapsed:.1f}s: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
