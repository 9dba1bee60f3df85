"""BatchBuffers: aligned batches that TensorFlow takes without a copy, reused only once no view
of them is alive, a tensor's included."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from trainer.data.batch_buffers import ALIGN, BatchBuffers, aligned_empty, is_aligned


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((3, 5, 7, 3), "uint8"), ((1, 224, 224, 3), "float32")],
)
def test_aligned_empty_is_aligned_and_contiguous(shape, dtype):
    for _ in range(5):  # several allocations: NumPy's own are 16-byte aligned
        x = aligned_empty(shape, dtype)
        assert x.shape == shape and x.dtype == np.dtype(dtype)
        assert x.flags.c_contiguous and x.ctypes.data % ALIGN == 0
        assert is_aligned(x)
    assert not is_aligned(aligned_empty((4, 3), "uint8")[:, :2]), "not contiguous"


def test_a_buffer_is_reused_only_when_no_view_is_alive():
    buffers = BatchBuffers((4, 4, 3), "uint8", keep=4)
    x = buffers.take(8)
    x[...] = 1
    y = buffers.take(8)
    assert not np.shares_memory(x, y)
    chunk = x[4:]  # what the feed hands TensorFlow: a slice
    del x
    z = buffers.take(8)
    assert not np.shares_memory(z, chunk), "a buffer whose slice is alive was handed out"
    assert buffers.allocated == 3
    del chunk
    again = buffers.take(8)
    assert buffers.allocated == 3, "the released buffer was not reused"
    assert all(is_aligned(a) for a in (y, z, again))
    assert buffers.take(5).shape == (5, 4, 4, 3), "another size gets a buffer of its own"


def test_at_most_keep_buffers_are_kept():
    buffers = BatchBuffers((2, 2, 3), "uint8", keep=2)
    held = [buffers.take(3) for _ in range(5)]  # all in use: each one new
    assert buffers.allocated == 5
    del held
    gc.collect()
    for _ in range(4):
        buffers.take(3)  # released: served from the two kept
    assert buffers.allocated == 5


def test_tensorflow_takes_a_batch_without_a_copy_and_keeps_it_alive():
    import tensorflow as tf

    buffers = BatchBuffers((8, 8, 3), "uint8", keep=4)
    x = buffers.take(4)
    x[...] = 7
    items = [x[2:]]  # what the feed yields: a per-replica slice
    ds = tf.data.Dataset.from_generator(
        lambda: iter(items), output_signature=tf.TensorSpec((None, 8, 8, 3), tf.uint8)
    )
    tensor = next(iter(ds))
    del ds
    items.clear()
    x[3, 0, 0, 0] = 9  # the tensor sees the write: it is the same memory
    assert int(tensor[1, 0, 0, 0]) == 9
    del x
    gc.collect()
    other = buffers.take(4)  # the tensor still holds the first buffer
    other[...] = 0
    assert int(tf.reduce_min(tensor)) == 7
    del tensor
    gc.collect()
    buffers.take(4)
    assert buffers.allocated == 2, "released by TensorFlow, reused"
