"""From dataset records to token ids: tulu-v2 `messages` and ultrafeedback pairs.

Conversations use Tulu's chat format (`<|user|>\\n...\\n<|assistant|>\\n...</s>`),
which works with any tokenizer. Only assistant replies (and their eos) are
trained on.
"""

from __future__ import annotations

import json
from typing import Dict, List, NamedTuple, Optional, Tuple

IGNORE_INDEX = -100  # PaddleNLP's causal-LM criteria skip this label
ROLE_TAGS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}


def load_jsonl(path: str) -> List[Dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _encode(tokenizer, text: str) -> List[int]:
    return tokenizer.encode(text, add_special_tokens=False)["input_ids"]


def tokenize_conversation(messages: List[Dict], tokenizer) -> Tuple[List[int], List[bool]]:
    """Token ids of a conversation, and per token whether the model learns to produce it."""
    tokens: List[int] = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    trained: List[bool] = [False] * len(tokens)
    for message in messages:
        role, content = message["role"], message["content"]
        if role == "assistant":
            header = _encode(tokenizer, ROLE_TAGS["assistant"] + "\n")
            reply = _encode(tokenizer, content) + [tokenizer.eos_token_id]
            tokens += header + reply
            trained += [False] * len(header) + [True] * len(reply)
        else:
            segment = _encode(tokenizer, f"{ROLE_TAGS[role]}\n{content}\n")
            tokens += segment
            trained += [False] * len(segment)
    return tokens, trained


class SFTExample(NamedTuple):
    """One conversation, already shifted: labels[t] is the token after input_ids[t]."""

    input_ids: List[int]
    labels: List[int]


def sft_example(messages: List[Dict], tokenizer, max_seq_len: int) -> Optional[SFTExample]:
    """Truncated to `max_seq_len`; None when nothing is left to train on.

    The shift happens inside the example, so once examples are packed, no label
    is ever a token of the next example.
    """
    tokens, trained = tokenize_conversation(messages, tokenizer)
    tokens, trained = tokens[: max_seq_len + 1], trained[: max_seq_len + 1]
    labels = [t if keep else IGNORE_INDEX for t, keep in zip(tokens[1:], trained[1:])]
    if all(label == IGNORE_INDEX for label in labels):
        return None
    return SFTExample(tokens[:-1], labels)


class PreferencePair(NamedTuple):
    """A prompt and two answers (each ending with eos), as token ids.

    In a sequence they become: the prompt without its last token (the shared
    question), then each answer preceded by that last prompt token, so that
    both answers are predicted from the full prompt (see collators.py).
    """

    prompt: List[int]
    chosen: List[int]
    rejected: List[int]

    @property
    def question_length(self) -> int:
        return len(self.prompt) - 1

    @property
    def length(self) -> int:
        return self.question_length + len(self.chosen) + len(self.rejected)


def _truncate_pair(pair: PreferencePair, max_seq_len: int) -> Optional[PreferencePair]:
    """Drops the prompt's oldest tokens first, then shortens both answers in proportion."""
    prompt, chosen, rejected = pair
    excess = pair.length - max_seq_len
    if excess > 0:
        kept = max(2, len(prompt) - excess)  # a question token and the answers' first input
        prompt = prompt[-kept:]
    room = max_seq_len - (len(prompt) - 1)
    if len(chosen) + len(rejected) > room:
        if room < 2:
            return None
        chosen_room = max(1, min(room - 1, room * len(chosen) // (len(chosen) + len(rejected))))
        chosen, rejected = chosen[:chosen_room], rejected[: room - chosen_room]
    return PreferencePair(prompt, chosen, rejected)


def preference_pair(record: Dict, tokenizer, max_seq_len: int) -> Optional[PreferencePair]:
    """An ultrafeedback_binarized record: `chosen`/`rejected` are conversations
    that differ only in their last (assistant) message."""
    context = record["chosen"][:-1]
    prompt = tokenize_conversation(context, tokenizer)[0] + _encode(tokenizer, ROLE_TAGS["assistant"] + "\n")
    eos = [tokenizer.eos_token_id]
    chosen = _encode(tokenizer, record["chosen"][-1]["content"]) + eos
    rejected = _encode(tokenizer, record["rejected"][-1]["content"]) + eos
    return _truncate_pair(PreferencePair(prompt, chosen, rejected), max_seq_len)
