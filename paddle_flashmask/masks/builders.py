"""One builder per mask type of the FlashMask paper.

Each returns a MaskSpec (int32 `startend_row_indices` [B, Hm, Sk, bounds] and
the `causal` flag). Pictures show row i (query) against column j (key) for a
small case: `#` attends, `.` is masked. Document-style builders take lengths
per sequence: a flat list for one sequence, a list of lists for a batch
(every sequence must then have the same total length).
"""

from __future__ import annotations

from typing import Sequence, Tuple, Union

import numpy as np

from paddle_flashmask import _args
from paddle_flashmask.masks.spec import MaskSpec

Lengths = Union[Sequence[int], Sequence[Sequence[int]]]
_SEQUENCE_TYPES = (list, tuple, np.ndarray)


def _sequences(items, name: str, where: str, is_item) -> list:
    """A flat list of items describes one sequence; a list of such lists a batch.
    Returns (name of the sequence for messages, list of items) per sequence."""
    if not isinstance(items, _SEQUENCE_TYPES):
        raise TypeError(f"{where}: `{name}` must be a list, got {_args.describe(items)}")
    if len(items) == 0:
        raise ValueError(f"{where}: `{name}` must not be empty")
    if is_item(items[0]):
        return [(name, list(items))]
    batch = [(f"{name}[{i}]", sequence) for i, sequence in enumerate(items)]
    for sequence_name, sequence in batch:
        if not isinstance(sequence, _SEQUENCE_TYPES) or len(sequence) == 0:
            raise TypeError(f"{where}: `{sequence_name}` must be a non-empty list, got {_args.describe(sequence)}")
    return [(sequence_name, list(sequence)) for sequence_name, sequence in batch]


def _lengths(doc_lengths, where: str) -> list:
    """`doc_lengths` as a list of lists of positive ints, one per sequence."""
    batch = _sequences(doc_lengths, "doc_lengths", where, lambda x: not isinstance(x, _SEQUENCE_TYPES))
    return [_args.integer_sequence(lengths, name, where, minimum=1) for name, lengths in batch]


def _pairs(documents, where: str) -> list:
    """`documents` (per sequence, a list of 2-tuples; one such list for one
    sequence) as (name for messages, list of 2-tuples) per sequence."""
    batch = _sequences(documents, "documents", where, lambda x: isinstance(x, tuple))
    for name, docs in batch:
        for j, doc in enumerate(docs):
            if not isinstance(doc, tuple) or len(doc) != 2:
                raise TypeError(f"{where}: `{name}[{j}]` must be a 2-tuple, got {_args.describe(doc)}")
    return batch


def _doc_spans(lengths: Sequence[int]):
    """Yields (start, end) of each document (lengths already checked)."""
    start = 0
    for n in lengths:
        yield start, start + n
        start += n


def _size(value, name: str, where: str, minimum: int = 1) -> int:
    return _args.integer(value, name, where, minimum=minimum)


def _same_length(per_seq_lengths: Sequence[int], what: str, where: str) -> int:
    if len(set(per_seq_lengths)) != 1:
        raise ValueError(
            f"{where}: every sequence of the batch must have the same total length of `{what}`, "
            f"got {list(per_seq_lengths)}"
        )
    return per_seq_lengths[0]


def _spec(columns: Sequence[np.ndarray], causal: bool) -> MaskSpec:
    """columns: one [Sk, bounds] (or [Hm, Sk, bounds]) array per sequence."""
    arr = np.stack([np.asarray(c) for c in columns])
    if arr.ndim == 3:
        arr = arr[:, None]
    return MaskSpec(np.ascontiguousarray(arr, dtype=np.int32), causal)


def no_mask_indices(causal: bool, batch: int, seqlen_q: int, seqlen_k: int) -> np.ndarray:
    """Bounds that mask nothing beyond `causal`: int32 [batch, 1, seqlen_k, 1 if causal else 2]."""
    where = "no_mask_indices"
    causal = _args.boolean(causal, "causal", where)
    batch, seqlen_q, seqlen_k = (
        _size(v, n, where) for v, n in ((batch, "batch"), (seqlen_q, "seqlen_q"), (seqlen_k, "seqlen_k"))
    )
    lts = np.full(seqlen_k, seqlen_q)
    cols = lts[:, None] if causal else np.stack([lts, np.zeros(seqlen_k)], -1)
    return _spec([cols] * batch, causal).startend_row_indices


def full_mask(seqlen: int, batch: int = 1) -> MaskSpec:
    """Every query attends to every key (non-causal, nothing masked).

    ####
    ####
    ####
    ####
    """
    seqlen, batch = _size(seqlen, "seqlen", "full_mask"), _size(batch, "batch", "full_mask")
    return MaskSpec(no_mask_indices(False, batch, seqlen, seqlen), False)


def causal_mask(seqlen: int, batch: int = 1) -> MaskSpec:
    """Query i attends to keys 0..i.

    #...
    ##..
    ###.
    ####
    """
    seqlen, batch = _size(seqlen, "seqlen", "causal_mask"), _size(batch, "batch", "causal_mask")
    return MaskSpec(no_mask_indices(True, batch, seqlen, seqlen), True)


def window_extent(window_size, where: str) -> Tuple[int, int]:
    """Paddle's `window_size` (an int, or a (left, right) pair of ints, all >= 0) as (left, right)."""
    if isinstance(window_size, np.ndarray) and window_size.ndim == 0:
        window_size = window_size.item()
    if isinstance(window_size, _SEQUENCE_TYPES):
        if len(window_size) != 2:
            raise ValueError(
                f"{where}: `window_size` must be an int or a (left, right) pair, got {len(window_size)} values"
            )
        left, right = window_size
        return (
            _args.integer(left, "window_size[0]", where, minimum=0),
            _args.integer(right, "window_size[1]", where, minimum=0),
        )
    if _args.is_bool(window_size) or not isinstance(window_size, (int, np.integer)):
        raise TypeError(
            f"{where}: `window_size` must be an int or a (left, right) pair of ints, got {_args.describe(window_size)}"
        )
    size = _args.integer(window_size, "window_size", where, minimum=0)
    return size, size


def window_size_to_indices(window_size, causal: bool, seqlen_q: int, seqlen_k: int, batch: int = 1):
    """Paddle's `window_size` argument as bounds (int32 [batch, 1, seqlen_k, 1 or 2]).

    Query i attends to keys [i' - left, i' + right] (right = 0 when causal),
    where i' = i + seqlen_k - seqlen_q aligns the last query with the last key
    (the same as Paddle's conversion when seqlen_q == seqlen_k). Bounds are
    clipped to [0, seqlen_q].
    """
    where = "window_size_to_indices"
    left, right = window_extent(window_size, where)
    causal = _args.boolean(causal, "causal", where)
    batch, seqlen_q, seqlen_k = (
        _size(v, n, where) for v, n in ((batch, "batch"), (seqlen_q, "seqlen_q"), (seqlen_k, "seqlen_k"))
    )
    offset = seqlen_k - seqlen_q
    j = np.arange(seqlen_k)
    lts = np.clip(j - offset + left + 1, 0, seqlen_q)
    if causal:
        cols = lts[:, None]
    else:
        ute = np.clip(j - offset - right, 0, seqlen_q)
        cols = np.stack([lts, ute], -1)
    return _spec([cols] * batch, causal).startend_row_indices


def sliding_window_mask(seqlen: int, window: int, batch: int = 1) -> MaskSpec:
    """Causal attention to the `window` keys before the query and itself (window=2 shown).

    #.....
    ##....
    ###...
    .###..
    ..###.
    ...###
    """
    where = "sliding_window_mask"
    seqlen, batch = _size(seqlen, "seqlen", where), _size(batch, "batch", where)
    window = _size(window, "window", where, minimum=0)
    return MaskSpec(window_size_to_indices(window, True, seqlen, seqlen, batch), True)


def causal_document_mask(doc_lengths: Lengths) -> MaskSpec:
    """Packed documents, causal inside each, nothing across (lengths [2, 3, 1] shown).

    #.....
    ##....
    ..#...
    ..##..
    ..###.
    .....#
    """
    columns = []
    for lengths in _lengths(doc_lengths, "causal_document_mask"):
        lts = np.concatenate([np.full(e - s, e) for s, e in _doc_spans(lengths)])
        columns.append(lts[:, None])
    _same_length([len(c) for c in columns], "doc_lengths", "causal_document_mask")
    return _spec(columns, causal=True)


def document_mask(doc_lengths: Lengths) -> MaskSpec:
    """Packed documents, bidirectional inside each, nothing across (lengths [2, 3, 1] shown).

    ##....
    ##....
    ..###.
    ..###.
    ..###.
    .....#
    """
    columns = []
    for lengths in _lengths(doc_lengths, "document_mask"):
        spans = list(_doc_spans(lengths))
        lts = np.concatenate([np.full(e - s, e) for s, e in spans])
        ute = np.concatenate([np.full(e - s, s) for s, e in spans])
        columns.append(np.stack([lts, ute], -1))
    _same_length([len(c) for c in columns], "doc_lengths", "document_mask")
    return _spec(columns, causal=False)


def share_question_mask(documents) -> MaskSpec:
    """DPO/RM packing: a question, then answers that each see the question and
    themselves, never each other; causal throughout.

    `documents`: per sequence, a list of (question_length, [answer_lengths...]).
    Shown: one document, question 2, answers [2, 2].

    #.....
    ##....
    ###...
    ####..
    ##..#.
    ##..##
    """
    where = "share_question_mask"
    columns = []
    for name, docs in _pairs(documents, where):
        lts = []
        start = 0
        for j, (question, answers) in enumerate(docs):
            question = _size(question, f"{name}[{j}][0]", where)
            answers = _args.integer_sequence(answers, f"{name}[{j}][1]", where, minimum=1)
            doc_end = start + question + sum(answers)
            lts.append(np.full(question, doc_end))  # the question is seen by its answers only
            answer_start = start + question
            for a in answers:
                lts.append(np.full(a, answer_start + a))  # an answer is seen by itself only
                answer_start += a
            start = doc_end
        columns.append(np.concatenate(lts)[:, None])
    _same_length([len(c) for c in columns], "documents", where)
    return _spec(columns, causal=True)


def global_sliding_window_mask(seqlen: int, global_tokens: int, window: int, batch: int = 1) -> MaskSpec:
    """Bidirectional band of half-width `window`, plus `global_tokens` leading
    tokens that see and are seen by everything (global 1, window 1 shown).

    ######
    ###...
    ####..
    #.###.
    #..###
    #...##
    """
    where = "global_sliding_window_mask"
    seqlen, batch = _size(seqlen, "seqlen", where), _size(batch, "batch", where)
    global_tokens = _args.integer(global_tokens, "global_tokens", where, minimum=0, maximum=seqlen)
    window = _size(window, "window", where, minimum=0)
    j = np.arange(seqlen)
    is_global = j < global_tokens
    lts = np.where(is_global, seqlen, np.minimum(j + window + 1, seqlen))
    lte = np.full(seqlen, seqlen)
    uts = np.where(is_global, 0, global_tokens)
    ute = np.where(is_global, 0, np.maximum(j - window, global_tokens))
    return _spec([np.stack([lts, lte, uts, ute], -1)] * batch, causal=False)


def causal_blockwise_mask(doc_lengths: Lengths) -> MaskSpec:
    """Causal documents, except that the last document sees all earlier ones
    (in-context examples, then the query; lengths [2, 2, 2] shown).

    #.....
    ##....
    ..#...
    ..##..
    #####.
    ######
    """
    columns = []
    for lengths in _lengths(doc_lengths, "causal_blockwise_mask"):
        spans = list(_doc_spans(lengths))
        last_start = spans[-1][0]
        total = spans[-1][1]
        lts = np.concatenate([np.full(e - s, e) for s, e in spans])
        # Earlier documents stay masked only up to the last document's first row.
        lte = np.concatenate([np.full(e - s, last_start if e < total else e) for s, e in spans])
        columns.append(np.stack([lts, lte], -1))
    _same_length([len(c) for c in columns], "doc_lengths", "causal_blockwise_mask")
    return _spec(columns, causal=True)


def prefix_lm_causal_mask(seqlen: int, prefix_length: int, batch: int = 1) -> MaskSpec:
    """Bidirectional over the first `prefix_length` tokens, causal after (prefix 3 shown).

    ###...
    ###...
    ###...
    ####..
    #####.
    ######
    """
    where = "prefix_lm_causal_mask"
    seqlen, batch = _size(seqlen, "seqlen", where), _size(batch, "batch", where)
    prefix_length = _args.integer(prefix_length, "prefix_length", where, minimum=0, maximum=seqlen)
    j = np.arange(seqlen)
    lts = np.full(seqlen, seqlen)
    ute = np.where(j < prefix_length, 0, j)
    return _spec([np.stack([lts, ute], -1)] * batch, causal=False)


def prefix_lm_document_mask(documents) -> MaskSpec:
    """Packed prefix-LM documents: each bidirectional over its own prefix, causal
    after it, nothing across documents.

    `documents`: per sequence, a list of (prefix_length, document_length).
    Shown: [(2, 3), (1, 3)].

    ##....
    ##....
    ###...
    ...#..
    ...##.
    ...###
    """
    where = "prefix_lm_document_mask"
    columns = []
    for name, docs in _pairs(documents, where):
        lts, ute = [], []
        start = 0
        for j, (prefix, length) in enumerate(docs):
            length = _size(length, f"{name}[{j}][1]", where)
            prefix = _args.integer(prefix, f"{name}[{j}][0]", where, minimum=0, maximum=length)
            end = start + length
            j = np.arange(start, end)
            lts.append(np.full(length, end))
            ute.append(np.where(j < start + prefix, start, j))
            start = end
        columns.append(np.stack([np.concatenate(lts), np.concatenate(ute)], -1))
    _same_length([len(c) for c in columns], "documents", where)
    return _spec(columns, causal=False)


def qk_sparse_mask(seqlen: int, spans: Sequence[Tuple[int, int]], batch: int = 1) -> MaskSpec:
    """Causal, but inside each span [start, end) tokens do not attend to span
    tokens at or before themselves: they see only what precedes the span. Later
    tokens see the span normally (span (2, 5) shown, as in Paddle's docstring).

    #.......
    ##......
    ##......
    ##......
    ##......
    ######..
    #######.
    ########
    """
    where = "qk_sparse_mask"
    seqlen, batch = _size(seqlen, "seqlen", where), _size(batch, "batch", where)
    if not isinstance(spans, _SEQUENCE_TYPES):
        raise TypeError(f"{where}: `spans` must be a list of (start, end) pairs, got {_args.describe(spans)}")
    lts = np.full(seqlen, seqlen)
    lte = np.full(seqlen, seqlen)
    for i, span in enumerate(spans):
        span = _args.integer_sequence(span, f"spans[{i}]", where, minimum=0)
        if len(span) != 2 or not span[0] < span[1] <= seqlen:
            raise ValueError(f"{where}: `spans[{i}]` must be (start, end) with 0 <= start < end <= {seqlen}, got {span}")
        start, end = span
        j = np.arange(start, end)
        lts[start:end] = j
        lte[start:end] = end
    return _spec([np.stack([lts, lte], -1)] * batch, causal=True)


def random_eviction_mask(
    seqlen: int, num_heads: int, batch: int = 1, evict_fraction: float = 0.5, seed: int = 0
) -> MaskSpec:
    """Causal, and per head a random `evict_fraction` of keys is evicted from
    the cache at a random later row: from that row on nobody attends to it.
    Bounds differ per head ([B, num_heads, Sk, 1]), the case a per-head dense
    or block mask pays most for. Shown: seqlen 6, one head, seed 3.

    #.....
    ##....
    ###...
    ####..
    ..###.
    ..####
    """
    where = "random_eviction_mask"
    seqlen, num_heads, batch = (
        _size(v, n, where) for v, n in ((seqlen, "seqlen"), (num_heads, "num_heads"), (batch, "batch"))
    )
    evict_fraction = _args.real(evict_fraction, "evict_fraction", where, minimum=0.0, maximum=1.0)
    rng = np.random.default_rng(_args.integer(seed, "seed", where, minimum=0))
    j = np.arange(seqlen)
    evicted = rng.random((batch, num_heads, seqlen)) < evict_fraction
    evict_row = rng.integers(j + 1, seqlen + 1, size=(batch, num_heads, seqlen))
    lts = np.where(evicted, evict_row, seqlen)
    return MaskSpec(np.ascontiguousarray(lts[..., None], dtype=np.int32), True)
