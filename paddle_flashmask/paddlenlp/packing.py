"""Greedy packing of examples into sequences of at most `max_seq_len` tokens.

Like PaddleNLP's zero padding: examples are taken in order and appended to
the current sequence while they fit; the first one that does not fit starts
the next sequence. The collators then lay each pack out as one row whose
attention mask keeps the examples apart.
"""

from __future__ import annotations

from typing import List, Sequence, TypeVar

from paddle_flashmask import _args

Example = TypeVar("Example")


def pack_greedily(examples: Sequence[Example], lengths: Sequence[int], max_seq_len: int) -> List[List[Example]]:
    """Groups consecutive examples; every group's total length is <= max_seq_len."""
    where = "pack_greedily"
    max_seq_len = _args.integer(max_seq_len, "max_seq_len", where, minimum=1)
    lengths = _args.integer_sequence(lengths, "lengths", where, minimum=1)
    if len(lengths) != len(examples):
        raise ValueError(f"{where}: `lengths` must have one entry per example ({len(examples)}), got {len(lengths)}")
    packs: List[List[Example]] = []
    current: List[Example] = []
    used = 0
    for i, (example, length) in enumerate(zip(examples, lengths)):
        if length > max_seq_len:
            raise ValueError(f"{where}: `lengths[{i}]` ({length}) must be at most `max_seq_len` ({max_seq_len})")
        if used + length > max_seq_len:
            packs.append(current)
            current, used = [], 0
        current.append(example)
        used += length
    if current:
        packs.append(current)
    return packs
