"""Text in and out of a llama.cpp model: chat template, tokenizer, incremental detokenizer.

Prompts are always chat-templated: a plain ``prompt`` becomes one user message, so both request
shapes go through the same path and ``count_tokens`` measures what the engine really prefills::

    prompt_text = template.render(messages)              # the GGUF's own Jinja template
    tokens      = tokenizer.encode(prompt_text)          # special tokens parsed (<|im_start|>...)

Output text is decoded token by token. A token's piece is raw bytes, and byte-level BPE splits
multi-byte UTF-8 characters (emoji, CJK) across tokens, so pieces are fed to an incremental UTF-8
decoder that holds back an incomplete character until its last byte arrives::

    stream = TextStream(); stream.feed(b"\\xf0\\x9f"); stream.feed(b"\\x99\\x82"); stream.close()
    # -> "🙂"

All functions take the raw ``llama_vocab`` pointer of a loaded model; they only read it, which
llama.cpp allows from any thread (its server tokenizes in request threads the same way).
"""

from __future__ import annotations

import codecs
import ctypes
from collections.abc import Sequence

import numpy as np

_PIECE_BYTES = 64  # most tokens are far shorter; longer ones get a second, exact-size call


class Tokenizer:
    """Tokenize and render tokens with the vocabulary of a loaded model."""

    def __init__(self, vocab, llama_cpp_module):
        self._vocab = vocab
        self._lib = llama_cpp_module
        self.n_vocab: int = int(llama_cpp_module.llama_vocab_n_tokens(vocab))
        self.add_bos: bool = bool(llama_cpp_module.llama_vocab_get_add_bos(vocab))

    def encode(self, text: str, *, add_special: bool = True) -> np.ndarray:
        """Token ids (int32) of ``text``; special-token markup in it is parsed as such."""
        data = text.encode("utf-8")
        capacity = len(data) + 8
        for _ in range(2):
            buffer = (self._lib.llama_token * capacity)()
            n = self._lib.llama_tokenize(
                self._vocab, data, len(data), buffer, capacity, add_special, True
            )
            if n >= 0:
                return np.ctypeslib.as_array(buffer)[:n].astype(np.int32)
            capacity = -n  # the size it needs
        raise RuntimeError(f"llama_tokenize failed for a text of {len(data)} bytes")

    def piece(self, token: int, *, special: bool = False) -> bytes:
        """Raw bytes of one token (may be part of a UTF-8 character); "" for control tokens."""
        buffer = ctypes.create_string_buffer(_PIECE_BYTES)
        n = self._lib.llama_token_to_piece(
            self._vocab, int(token), buffer, _PIECE_BYTES, 0, special
        )
        if n < 0:
            buffer = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self._vocab, int(token), buffer, -n, 0, special)
        return buffer.raw[: max(n, 0)]

    def token_text(self, token: int) -> str:
        """The vocabulary's text for a token id ("" for -1, the "no such token" id)."""
        if token < 0:
            return ""
        raw = self._lib.llama_vocab_get_text(self._vocab, int(token))
        return raw.decode("utf-8", errors="replace") if raw else ""

    def is_end_of_generation(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._vocab, int(token)))


class ChatTemplate:
    """The model's chat template (Jinja, from the GGUF metadata) as ``messages -> prompt``.

    Without a template in the file, the prompt of a single user message is its content as is,
    and longer conversations become ``role: content`` lines ending in ``assistant:``.
    """

    def __init__(self, template: str | None, *, bos_token: str, eos_token: str):
        self.source = template
        self.bos_token = bos_token
        self._formatter = None
        if template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=eos_token,
                bos_token=bos_token,
                add_generation_prompt=True,
            )

    def render(self, messages: Sequence[dict]) -> str:
        messages = [
            {"role": str(m.get("role", "user")), "content": str(m.get("content") or "")}
            for m in messages
        ]
        if not messages:
            raise ValueError("a chat request needs at least one message")
        if self._formatter is not None:
            return self._formatter(messages=messages).prompt
        if len(messages) == 1 and messages[0]["role"] == "user":
            return messages[0]["content"]
        lines = [f"{m['role']}: {m['content']}" for m in messages]
        return "\n".join([*lines, "assistant:"])


class TextStream:
    """Incremental UTF-8 decoding of token pieces; invalid bytes become U+FFFD, never an error."""

    def __init__(self):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._parts: list[str] = []

    def feed(self, piece: bytes) -> str:
        """Decode ``piece``; returns the characters it completed (may be "")."""
        text = self._decoder.decode(piece)
        self._parts.append(text)
        return text

    def close(self) -> str:
        """The whole text; a character cut off at the end becomes U+FFFD."""
        self._parts.append(self._decoder.decode(b"", final=True))
        return "".join(self._parts)
