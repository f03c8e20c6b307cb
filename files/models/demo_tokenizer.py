"""The demo model's tokenizer and chat template: FunctionGemma's control tokens and its chat format.

Part of the demo builder (build_demo_model.py, its entry point); shipped beside it.  Standard library
only at import time: tokenizers and transformers are imported inside the functions that need them.
"""

from __future__ import annotations

from pathlib import Path

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
                  "INTEGER NUMBER BOOLEAN ARRAY enum: items: call: response: value: None developer user model")

# The chat template: FunctionGemma's own format, byte for byte (chat_template.jinja says how it is proven).
CHAT_TEMPLATE = (Path(__file__).resolve().parent / "chat_template.jinja").read_text(encoding="utf-8")


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
