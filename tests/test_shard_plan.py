"""ShardPlan: blocks of shards read in windows, front to back, each sample once per epoch."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.pack.plan import ShardPlan

MEMBERS = tuple(np.arange(16 * s, 16 * s + 16) for s in range(4))  # 4 shards of 16, in order


def _plan(**kw) -> ShardPlan:
    return ShardPlan(shard_members=MEMBERS, batch_size=4, seed=5, block_shards=2, **kw)


def test_a_block_is_read_in_windows_that_mix_its_shards_front_to_back():
    plan = _plan(block_windows=4)
    order = plan.epoch_order(0)
    assert sorted(order.tolist()) == list(range(64))
    shards = plan.shard_order(0)
    for b, block in enumerate((shards[:2], shards[2:])):
        for w in range(4):
            window = order[32 * b + 8 * w : 32 * b + 8 * (w + 1)]
            expected = {int(p) for s in block for p in MEMBERS[s][4 * w : 4 * w + 4]}
            assert set(window.tolist()) == expected
    assert not np.array_equal(order, plan.epoch_order(1))
    assert np.array_equal(order, _plan(block_windows=4).epoch_order(0))


def test_one_window_shuffles_the_whole_block():
    order = _plan(block_windows=1).epoch_order(0)
    first = set(order[:8].tolist())
    block = set(_plan(block_windows=1).shard_order(0)[:2])
    assert {int(p) // 16 for p in first} == block
    assert max(int(p) % 16 for p in first) >= 4, "drawn from anywhere in the shards"


def test_windows_and_blocks_must_be_positive():
    with pytest.raises(ValueError, match="block_windows"):
        _plan(block_windows=0)
