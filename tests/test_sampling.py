"""Order, sharding and remainder policies of `BatchPlan`: pure functions, checked exhaustively."""

import itertools

import numpy as np
import pytest

from trainer.data.sampling import BatchPlan


def shards(n, count, **kw):
    return [BatchPlan(num_samples=n, shard_index=k, shard_count=count, **kw) for k in range(count)]


def epoch_samples(plan, epoch):
    return np.concatenate([plan.batch(epoch=epoch, index=i) for i in range(len(plan))])


@pytest.mark.parametrize(("n", "count"), [(100, 1), (101, 2), (103, 4), (7, 7)])
def test_shards_are_disjoint_and_cover_the_dataset(n, count):
    members = [set(p.members.tolist()) for p in shards(n, count, batch_size=1)]
    for a, b in itertools.combinations(members, 2):
        assert not a & b
    assert set().union(*members) == set(range(n))
    sizes = sorted(len(m) for m in members)
    assert sizes[-1] - sizes[0] <= 1


def test_order_is_a_pure_function_of_seed_and_epoch():
    a = BatchPlan(num_samples=50, batch_size=8, seed=3)
    b = BatchPlan(num_samples=50, batch_size=8, seed=3)
    assert np.array_equal(a.epoch_order(2), b.epoch_order(2))
    assert not np.array_equal(a.epoch_order(2), a.epoch_order(3))
    assert not np.array_equal(
        a.epoch_order(2), BatchPlan(num_samples=50, batch_size=8, seed=4).epoch_order(2)
    )


def test_no_shuffle_serves_sorted_members():
    plan = BatchPlan(num_samples=20, batch_size=6, shuffle=False, remainder="pad")
    assert epoch_samples(plan, 5)[:20].tolist() == list(range(20))


@pytest.mark.parametrize(
    ("n", "count"), [(n, c) for n in (1, 2, 9, 10, 11, 31, 64, 65) for c in (1, 2, 3) if n >= c]
)
@pytest.mark.parametrize(("batch", "replicas"), [(4, 1), (4, 2), (8, 4), (6, 3)])
def test_pad_serves_every_sample_once_and_repeats_the_fewest(n, batch, replicas, count):
    plans = shards(n, count, batch_size=batch, replica_multiple=replicas, remainder="pad", seed=1)
    lengths = {len(p) for p in plans}
    assert len(lengths) == 1, "every shard takes the same number of steps"
    for plan in plans:
        sizes = [len(plan.batch(epoch=0, index=i)) for i in range(len(plan))]
        assert all(s % replicas == 0 and s > 0 for s in sizes)
        assert all(s == batch for s in sizes[:-1])
        served = epoch_samples(plan, 0)
        assert set(served.tolist()) == set(plan.members.tolist())
        # Fewest repeats: one replica-multiple less would not hold the longest shard.
        longest = max(len(p.members) for p in plans)
        assert len(served) >= longest > len(served) - replicas
        assert plan.padded == len(served) - len(plan.members)


@pytest.mark.parametrize("n", [9, 10, 11, 31, 64, 65])
@pytest.mark.parametrize(("batch", "replicas"), [(4, 1), (4, 2), (8, 4)])
def test_drop_never_repeats_and_drops_fewer_than_a_replica_multiple(n, batch, replicas):
    plans = shards(n, 2, batch_size=batch, replica_multiple=replicas, remainder="drop")
    assert len({len(p) for p in plans}) == 1
    for plan in plans:
        served = epoch_samples(plan, 0)
        assert len(set(served.tolist())) == len(served)
        assert all(len(plan.batch(epoch=0, index=i)) % replicas == 0 for i in range(len(plan)))
        shortest = min(len(p.members) for p in plans)
        assert shortest - replicas < len(served) <= shortest


def test_drop_leaves_out_different_samples_each_epoch():
    plan = BatchPlan(num_samples=10, batch_size=4, replica_multiple=4, remainder="drop")
    left_out = [set(range(10)) - set(epoch_samples(plan, e).tolist()) for e in range(6)]
    assert len({frozenset(s) for s in left_out}) > 1


def test_invalid_plans_are_rejected():
    with pytest.raises(ValueError, match="multiple"):
        BatchPlan(num_samples=10, batch_size=3, replica_multiple=2)
    with pytest.raises(ValueError, match="remainder"):
        BatchPlan(num_samples=10, batch_size=2, remainder="keep")
    with pytest.raises(ValueError, match="cannot fill"):
        BatchPlan(num_samples=3, batch_size=8, replica_multiple=4, remainder="drop")


def test_replacement_is_deterministic_and_from_the_same_shard():
    plan = BatchPlan(num_samples=40, batch_size=4, shard_index=1, shard_count=3, seed=9)
    picks = [plan.replacement(epoch=2, slot=s, attempt=0) for s in range(20)]
    assert picks == [plan.replacement(epoch=2, slot=s, attempt=0) for s in range(20)]
    assert set(picks) <= set(plan.members.tolist())
