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

from paddle_flashmask.masks.spec import MaskSpec

Lengths = Union[Sequence[int], Sequence[Sequence[int]]]


def _per_sequence(items) -> list:
    """A flat list describes one sequence; a list of lists a batch of them."""
    items = list(items)
    if items and isinstance(items[0], (list, tuple, np.ndarray)):
        return [list(x) for x in items]
    return [items]


def _doc_spans(lengths: Sequence[int]):
    """Yields (start, end) of each document."""
    start = 0
    for n in lengths:
        if int(n) <= 0:
            raise ValueError(f"document lengths must be positive, got {list(lengths)}")
        yield start, start + int(n)
        start += int(n)


def _same_length(per_seq_lengths: Sequence[int], what: str) -> int:
    if len(set(per_seq_lengths)) != 1:
        raise ValueError(
            f"every sequence of the batch must have the same total length of {what}, "
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
    return MaskSpec(no_mask_indices(False, batch, seqlen, seqlen), False)


def causal_mask(seqlen: int, batch: int = 1) -> MaskSpec:
    """Query i attends to keys 0..i.

    #...
    ##..
    ###.
    ####
    """
    return MaskSpec(no_mask_indices(True, batch, seqlen, seqlen), True)


def window_size_to_indices(window_size, causal: bool, seqlen_q: int, seqlen_k: int, batch: int = 1):
    """Paddle's `window_size` argument as bounds (int32 [batch, 1, seqlen_k, 1 or 2]).

    Query i attends to keys [i' - left, i' + right] (right = 0 when causal),
    where i' = i + seqlen_k - seqlen_q aligns the last query with the last key
    (the same as Paddle's conversion when seqlen_q == seqlen_k). Bounds are
    clipped to [0, seqlen_q].
    """
    if isinstance(window_size, (int, np.integer)):
        left = right = int(window_size)
    else:
        left, right = (int(w) for w in window_size)
    if left < 0 or right < 0:
        raise ValueError(f"window_size must be non-negative, got {window_size}")
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
    for lengths in _per_sequence(doc_lengths):
        lts = np.concatenate([np.full(e - s, e) for s, e in _doc_spans(lengths)])
        columns.append(lts[:, None])
    _same_length([len(c) for c in columns], "documents")
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
    for lengths in _per_sequence(doc_lengths):
        spans = list(_doc_spans(lengths))
        lts = np.concatenate([np.full(e - s, e) for s, e in spans])
        ute = np.concatenate([np.full(e - s, s) for s, e in spans])
        columns.append(np.stack([lts, ute], -1))
    _same_length([len(c) for c in columns], "documents")
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
    if documents and isinstance(documents[0], tuple):
        documents = [documents]
    columns = []
    for docs in documents:
        lts = []
        start = 0
        for question, answers in docs:
            answers = [int(a) for a in answers]
            if int(question) <= 0 or min(answers, default=1) <= 0:
                raise ValueError(f"question and answer lengths must be positive, got {docs}")
            doc_end = start + int(question) + sum(answers)
            lts.append(np.full(int(question), doc_end))  # the question is seen by its answers only
            answer_start = start + int(question)
            for a in answers:
                lts.append(np.full(a, answer_start + a))  # an answer is seen by itself only
                answer_start += a
            start = doc_end
        columns.append(np.concatenate(lts)[:, None])
    _same_length([len(c) for c in columns], "documents")
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
    if not 0 <= global_tokens <= seqlen:
        raise ValueError(f"global_tokens must be in [0, {seqlen}], got {global_tokens}")
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
    for lengths in _per_sequence(doc_lengths):
        spans = list(_doc_spans(lengths))
        last_start = spans[-1][0]
        total = spans[-1][1]
        lts = np.concatenate([np.full(e - s, e) for s, e in spans])
        # Earlier documents stay masked only up to the last document's first row.
        lte = np.concatenate([np.full(e - s, last_start if e < total else e) for s, e in spans])
        columns.append(np.stack([lts, lte], -1))
    _same_length([len(c) for c in columns], "documents")
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
    if not 0 <= prefix_length <= seqlen:
        raise ValueError(f"prefix_length must be in [0, {seqlen}], got {prefix_length}")
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
    if documents and isinstance(documents[0], tuple):
        documents = [documents]
    columns = []
    for docs in documents:
        lts, ute = [], []
        start = 0
        for prefix, length in docs:
            prefix, length = int(prefix), int(length)
            if length <= 0 or not 0 <= prefix <= length:
                raise ValueError(f"need 0 <= prefix_length <= document_length > 0, got {docs}")
            end = start + length
            j = np.arange(start, end)
            lts.append(np.full(length, end))
            ute.append(np.where(j < start + prefix, start, j))
            start = end
        columns.append(np.stack([np.concatenate(lts), np.concatenate(ute)], -1))
    _same_length([len(c) for c in columns], "documents")
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
    lts = np.full(seqlen, seqlen)
    lte = np.full(seqlen, seqlen)
    for start, end in spans:
        if not 0 <= start < end <= seqlen:
            raise ValueError(f"spans must satisfy 0 <= start < end <= {seqlen}, got {(start, end)}")
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
    rng = np.random.default_rng(seed)
    j = np.arange(seqlen)
    evicted = rng.random((batch, num_heads, seqlen)) < evict_fraction
    evict_row = rng.integers(j + 1, seqlen + 1, size=(batch, num_heads, seqlen))
    lts = np.where(evicted, evict_row, seqlen)
    return MaskSpec(np.ascontiguousarray(lts[..., None], dtype=np.int32), True)
