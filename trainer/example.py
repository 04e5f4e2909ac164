"""Token batches -> model inputs: the one transformation every training and evaluation batch goes through."""

from __future__ import annotations

import numpy as np

from trainer import augment


def make_example(tokens: np.ndarray, pad_id: int, *, kinds: bool = False, scheme=None) -> dict[str, np.ndarray]:
    """(B, L) tokens -> inputs, targets (inputs shifted left by one), loss weights (0 where the target is PAD).

    Sequences keep length L: the last position's target is PAD (weight 0), so shapes stay powers of two.
    With ``kinds``, also the field kind of every target (``augment.KIND_NAMES``; -1 for PAD) under the
    tokenizer ``scheme`` (None: v1).
    """
    tokens = np.asarray(tokens)
    inputs = tokens.astype(np.int32)  # (B, L)
    targets = np.empty_like(inputs)  # (B, L)
    targets[:, :-1] = inputs[:, 1:]
    targets[:, -1] = pad_id
    weights = np.empty(tokens.shape, np.float32)  # (B, L) written once: this runs in the training process
    np.not_equal(tokens[:, 1:], pad_id, out=weights[:, :-1])
    weights[:, -1] = 0.0  # the last target is PAD
    out = {"inputs": inputs, "targets": targets, "weights": weights}
    if kinds:
        k = augment.field_kinds(tokens, scheme)  # (B, L) kinds of the inputs
        out["kinds"] = np.concatenate([k[:, 1:], np.full((len(k), 1), augment.KIND_PAD, np.int8)], axis=1)  # (B, L)
    return out
