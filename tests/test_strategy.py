"""Cluster resolution (pure): TF_CONFIG, or derived from a Kubernetes Indexed Job's env."""

import json

import pytest

from trainer.distribute.cluster import cluster_from_env
from trainer.errors import ConfigError


def test_single_worker_without_cluster_env():
    cluster = cluster_from_env({})
    assert not cluster.is_multi_worker and cluster.is_chief and cluster.num_workers == 1


def test_tf_config_is_read():
    env = {
        "TF_CONFIG": json.dumps(
            {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
        )
    }
    cluster = cluster_from_env(env)
    assert cluster.workers == ("a:1", "b:2") and cluster.task_index == 1
    assert cluster.is_multi_worker and not cluster.is_chief and cluster.tf_config is None


def test_indexed_job_env_derives_tf_config():
    cluster = cluster_from_env(
        {"JOB_COMPLETION_INDEX": "2"},
        num_workers=3,
        worker_service="train-workers",
        worker_port=2222,
        job_name="train-x7",
    )
    assert cluster.workers == (
        "train-x7-0.train-workers:2222",
        "train-x7-1.train-workers:2222",
        "train-x7-2.train-workers:2222",
    )
    doc = json.loads(cluster.tf_config)
    assert doc == {
        "cluster": {"worker": list(cluster.workers)},
        "task": {"type": "worker", "index": 2},
    }


@pytest.mark.parametrize(
    ("env", "kwargs", "message"),
    [
        ({"TF_CONFIG": "{not json"}, {}, "TF_CONFIG: not a valid"),
        (
            {
                "TF_CONFIG": json.dumps(
                    {"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}
                )
            },
            {},
            "only 'worker'",
        ),
        (
            {
                "TF_CONFIG": json.dumps(
                    {"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}
                )
            },
            {},
            "task index 3",
        ),
        ({}, {"num_workers": 2, "worker_service": "s", "job_name": "j"}, "JOB_COMPLETION_INDEX"),
        ({"JOB_COMPLETION_INDEX": "0"}, {"num_workers": 2}, "TRAINER_WORKER_SERVICE"),
        (
            {"JOB_COMPLETION_INDEX": "x"},
            {"num_workers": 2, "worker_service": "s", "job_name": "j"},
            "not an integer",
        ),
        (
            {"JOB_COMPLETION_INDEX": "5"},
            {"num_workers": 2, "worker_service": "s", "job_name": "j"},
            "not in \\[0, 2\\)",
        ),
    ],
)
def test_bad_cluster_env_is_a_config_error(env, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        cluster_from_env(env, **kwargs)
