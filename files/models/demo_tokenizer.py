"""The demo model's tokenizer and chat template: FunctionGemma's control tokens and documented format.

Part of the demo builder (build_demo_model.py, its entry point); shipped beside it.  Standard library
only at import time: tokenizers and transformers are imported inside the functions that need them.
"""

from __future__ import annotations

PAD, EOS, BOS, UNK = "<pad>", "<eos>", "<bos>", "<unk>"
SOT, EOT = "<start_of_turn>", "<end_of_turn>"
FUNCTION_TOKENS = [
    "<start_function_declaration>", "<end_function_declaration>",
    "<start_function_call>", "<end_function_call>",
    "<start_function_response>", "<end_function_response>",
    "<escape>",
]
SPECIAL_TOKENS = [PAD, EOS, BOS, UNK, SOT, EOT]  # special=True (skipped by skip_special_tokens)
CALL_STOP = "<start_function_response>"  # ends an adapter's answer (a stop token, as in FunctionGemma)
STOP_TOKENS = [EOS, EOT, CALL_STOP]
VOCAB_SIZE = 512
DEFAULT_DEVELOPER_PROMPT = "You are a model that can do function calling with the following functions"
# The words the template writes around declarations, calls and responses (learnt by the tokenizer).
TEMPLATE_WORDS = ("declaration: description: parameters: properties: required: type: STRING OBJECT "
                  "INTEGER NUMBER BOOLEAN call: response: value: developer user model")

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


def build_tokenizer(corpus: list[str]):
    """A byte-level BPE tokenizer of VOCAB_SIZE tokens trained on ``corpus``, with the control tokens and
    CHAT_TEMPLATE, as a transformers fast tokenizer."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(FUNCTION_TOKENS), min_frequency=2, show_progress=False,
        special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    # FunctionGemma's function tokens: atomic added tokens, but NOT special, so they are kept in
    # the detokenized text even with skip_special_tokens=True.
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


def control_token_ids(tok) -> dict[str, int]:
    """The id of each control token, checked to be one token, also inside running text (as FunctionGemma's)."""
    ids_of = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS + FUNCTION_TOKENS}
    for t in FUNCTION_TOKENS + [SOT, EOT]:
        enc = tok("a" + t + "b", add_special_tokens=False)["input_ids"]
        assert ids_of[t] in enc, (t, enc)
    return ids_of


def text_ids(tok, text: str) -> list[int]:
    """``text`` as token ids, without the BOS the post-processor adds."""
    return tok(text, add_special_tokens=False)["input_ids"]


def encode_example(tok, messages, tools, target: str):
    """(prompt ids, target ids): the conversation rendered by the chat template up to the model's turn."""
    prompt = tok.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False)
    return text_ids(tok, prompt), text_ids(tok, target)
