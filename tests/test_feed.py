"""The feed's per-replica chunks: the Sequence's own memory where TensorFlow can take it as it
is, one aligned copy where it cannot; and every pixel reaches the replica it was meant for."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.data.batch_buffers import BatchBuffers, is_aligned
from trainer.train.feed import split_per_replica


@pytest.mark.parametrize("parts", [1, 2, 4])
def test_chunks_of_an_aligned_batch_are_views_of_it(parts):
    x = BatchBuffers((224, 224, 3), "uint8", keep=1).take(8)
    x[...] = np.arange(8, dtype=np.uint8)[:, None, None, None]
    y = np.arange(8, dtype=np.int32)
    chunks = list(split_per_replica(x, y, None, parts))
    assert len(chunks) == parts
    for k, (pixels, labels) in enumerate(chunks):
        assert is_aligned(pixels) and np.shares_memory(pixels, x)
        assert labels.tolist() == list(range(k * 8 // parts, (k + 1) * 8 // parts))
        assert (pixels[:, 0, 0, 0] == labels).all()


def test_a_chunk_tensorflow_would_copy_is_copied_once_aligned():
    # 299 x 299 x 3 bytes is not a multiple of 64: the second replica's rows start unaligned.
    x = BatchBuffers((299, 299, 3), "uint8", keep=1).take(4)
    x[...] = np.random.default_rng(0).integers(0, 255, x.shape, np.uint8)
    y, w = np.arange(4, dtype=np.int32), np.ones(4, np.float32)
    (a, _, _), (b, yb, wb) = split_per_replica(x, y, w, 2)
    assert np.shares_memory(a, x), "the first starts where the batch does"
    assert not np.shares_memory(b, x) and is_aligned(b)
    assert np.array_equal(b, x[2:]) and yb.tolist() == [2, 3] and wb.tolist() == [1, 1]
