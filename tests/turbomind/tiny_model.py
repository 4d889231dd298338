"""A weightless local model directory for lmdeploy: config.json, a word-level tokenizer and a
chat template - what AsyncEngine reads before it builds the backend. Needs transformers."""

from __future__ import annotations

# Words of the tiny tokenizer; ids follow this order after <unk>=0, <s>=1, </s>=2.
WORDS = (
    "hello world the a of and to in is it you that he was for on are with as "
    "user assistant system alpha beta gamma delta"
).split()


def word_id(word: str) -> int:
    return 3 + WORDS.index(word)


def build_tiny_model(path) -> str:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({w: word_id(w) for w in WORDS})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.chat_template = (
        "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}assistant{% endif %}"
    )
    fast.save_pretrained(path)
    LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        architectures=["LlamaForCausalLM"],
    ).save_pretrained(path)
    return str(path)
