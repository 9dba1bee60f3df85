"""TrainConfig: precedence of flags, TRAINER_* variables, config files, AIP_* and defaults;
validation messages; the generated docs; no TensorFlow import."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from trainer.config import (
    FIELDS,
    MODELS,
    TrainConfig,
    build_config,
)
from trainer.config.docs import config_markdown
from trainer.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def data_dir(tmp_path: Path) -> str:
    for label in ("cat", "dog"):
        (tmp_path / "data" / label).mkdir(parents=True)
    return str(tmp_path / "data")


@pytest.fixture
def out(tmp_path: Path) -> str:
    return str(tmp_path / "out")


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults(data_dir: str, out: str) -> None:
    cfg = build_config(["--data", data_dir, "--output", out], env={})
    assert (cfg.epochs, cfg.batch_size, cfg.image_size) == (10, 32, (128, 128))
    assert cfg.model == "small_cnn" and cfg.learning_rate == 1e-3 and cfg.scale_lr is False
    assert cfg.checkpoint_dir == f"{out}/checkpoints"
    assert cfg.tensorboard_dir == f"{out}/tensorboard"
    assert cfg.cache_dir is None and cfg.min_val_accuracy is None
    assert (cfg.mixed_precision, cfg.remainder, cfg.dtype, cfg.on_corrupt) == (
        "auto",
        "pad",
        "uint8",
        "skip",
    )
    # The write probe created the output directory and left nothing in it.
    assert Path(out).is_dir()
    assert not [p for p in Path(out).iterdir() if p.name.startswith(".write-probe")]


# (field, flag args, env value, config-file value, expected from file, env, flag)
PRECEDENCE = [
    ("epochs", ["--epochs", "4"], "3", 2, 2, 3, 4),
    ("image_size", ["--image-size", "64,48"], "96", [32, 40], (32, 40), (96, 96), (64, 48)),
    ("scale_lr", ["--scale-lr"], "false", True, True, False, True),
    ("deterministic", ["--no-deterministic"], "yes", False, False, True, False),
    ("learning_rate", ["--learning-rate", "0.5"], "2e-2", 0.1, 0.1, 0.02, 0.5),
    (
        "model",
        ["--model", "resnet50"],
        "efficientnet_b0",
        "mobilenet_v3_small",
        "mobilenet_v3_small",
        "efficientnet_b0",
        "resnet50",
    ),
    ("max_steps_per_epoch", ["--max-steps-per-epoch", "7"], "6", 5, 5, 6, 7),
    ("remainder", ["--remainder", "pad"], "pad", "drop", "drop", "pad", "pad"),
]


@pytest.mark.parametrize(
    ("name", "flag_args", "env_value", "file_value", "from_file", "from_env", "from_flag"),
    PRECEDENCE,
    ids=[p[0] for p in PRECEDENCE],
)
def test_precedence_flag_env_file_default(
    tmp_path: Path,
    data_dir: str,
    out: str,
    name: str,
    flag_args: list[str],
    env_value: str,
    file_value: Any,
    from_file: Any,
    from_env: Any,
    from_flag: Any,
) -> None:
    base = ["--data", data_dir, "--output", out]
    default = next(f.default for f in FIELDS if f.name == name)
    conf = write(tmp_path, "c.yaml", json.dumps({name: file_value}))
    env_name = "TRAINER_" + name.upper()
    assert getattr(build_config(base, env={}), name) == default
    assert getattr(build_config([*base, "--config", conf], env={}), name) == from_file
    env = {env_name: env_value, "TRAINER_CONFIG": conf}
    assert getattr(build_config(base, env=env), name) == from_env
    assert getattr(build_config([*base, *flag_args], env=env), name) == from_flag
    assert from_file != default or name == "deterministic"  # each layer must change something
    assert from_env not in (from_file, from_flag) or name == "remainder"


def test_every_field_has_its_env_variable(tmp_path: Path) -> None:
    # data/output come only from the environment here: proves the derivation for every name.
    env = {"TRAINER_DATA": "gs://bucket/images", "TRAINER_OUTPUT": "gs://bucket/run"}
    cfg = build_config(None, env=env)
    assert (cfg.data, cfg.output) == ("gs://bucket/images", "gs://bucket/run")
    assert [f.env for f in FIELDS] == ["TRAINER_" + f.name.upper() for f in FIELDS]
    assert [f.flag for f in FIELDS] == ["--" + f.name.replace("_", "-") for f in FIELDS]


def test_env_defaults_to_os_environ_and_explicit_env_is_pure(
    monkeypatch: pytest.MonkeyPatch, data_dir: str, out: str
) -> None:
    monkeypatch.setenv("TRAINER_EPOCHS", "7")
    args = ["--data", data_dir, "--output", out]
    assert build_config(args).epochs == 7
    assert build_config(args, env={}).epochs == 10


def test_empty_env_variable_counts_as_unset(data_dir: str, out: str, tmp_path: Path) -> None:
    conf = write(tmp_path, "c.json", '{"epochs": 3}')
    cfg = build_config(
        ["--config", conf, "--data", data_dir, "--output", out],
        env={"TRAINER_EPOCHS": "", "TRAINER_INDEX": " "},
    )
    assert cfg.epochs == 3 and cfg.index is None


def test_yaml_file_sets_every_kind_of_value(tmp_path: Path, data_dir: str, out: str) -> None:
    conf = write(
        tmp_path,
        "train.yml",
        f"""
data: {data_dir}
output: {out}
image_size: 96
batch_size: 64
scale_lr: yes
min_val_accuracy: 0.5
mixed_precision: bf16
index: {tmp_path}/index/ds.json
cache_size_mb: 100
storage_deadline_s: 30
""",
    )
    cfg = build_config(None, env={"TRAINER_CONFIG": conf})
    assert cfg.data == data_dir and cfg.output == out
    assert cfg.image_size == (96, 96) and cfg.batch_size == 64 and cfg.scale_lr is True
    assert cfg.min_val_accuracy == 0.5 and cfg.mixed_precision == "bf16"
    assert cfg.index == f"{tmp_path}/index/ds.json" and (tmp_path / "index").is_dir()
    assert cfg.storage_deadline_s == 30.0 and isinstance(cfg.storage_deadline_s, float)
    # cache_size_mb > 0 without cache_dir: a default under the temp directory.
    assert cfg.cache_dir == os.path.join(tempfile.gettempdir(), "streamtrain-cache")


def test_json_file_and_empty_yaml_file(tmp_path: Path, data_dir: str, out: str) -> None:
    conf = write(
        tmp_path,
        "c.json",
        json.dumps({"data": data_dir, "output": out, "image_size": [64, 32], "seed": 9}),
    )
    cfg = build_config(["--config", conf], env={})
    assert cfg.image_size == (64, 32) and cfg.seed == 9
    empty = write(tmp_path, "empty.yaml", "# nothing yet\n")
    assert build_config(["--config", empty, "--data", data_dir, "--output", out], env={}).seed == 0


def test_vertex_ai_variables_are_defaults(tmp_path: Path, data_dir: str) -> None:
    aip = {"AIP_MODEL_DIR": "gs://vertex-bucket/job/model/"}
    cfg = build_config(["--data", data_dir], env=aip)
    assert cfg.output == "gs://vertex-bucket/job/model/"
    assert cfg.checkpoint_dir == "gs://vertex-bucket/job/model/checkpoints"
    assert cfg.tensorboard_dir == "gs://vertex-bucket/job/model/tensorboard"
    aip |= {
        "AIP_CHECKPOINT_DIR": "gs://vertex-bucket/job/checkpoints/",
        "AIP_TENSORBOARD_LOG_DIR": "gs://vertex-bucket/job/logs/",
    }
    cfg = build_config(["--data", data_dir], env=aip)
    assert cfg.checkpoint_dir == "gs://vertex-bucket/job/checkpoints/"
    assert cfg.tensorboard_dir == "gs://vertex-bucket/job/logs/"
    # The flag, TRAINER_* and the config file still win over AIP_*.
    cfg = build_config(["--data", data_dir, "--output", "gs://mine/run"], env=aip)
    assert cfg.output == "gs://mine/run"
    cfg = build_config(["--data", data_dir], env=aip | {"TRAINER_CHECKPOINT_DIR": "gs://mine/ck"})
    assert cfg.checkpoint_dir == "gs://mine/ck"
    conf = write(tmp_path, "c.yaml", "tensorboard_dir: gs://mine/tb\n")
    cfg = build_config(["--data", data_dir, "--config", conf], env=aip)
    assert cfg.tensorboard_dir == "gs://mine/tb"


def test_to_dict_is_json_and_round_trips(data_dir: str, out: str) -> None:
    cfg = build_config(["--data", data_dir, "--output", out, "--image-size", "64,32"], env={})
    as_dict = json.loads(json.dumps(cfg.to_dict()))
    assert as_dict["image_size"] == [64, 32] and set(as_dict) == {f.name for f in FIELDS}
    assert TrainConfig.from_dict(as_dict) == cfg
    with pytest.raises(ConfigError, match="did you mean epochs"):
        TrainConfig.from_dict({**as_dict, "epoch": 3})


def test_config_is_frozen(data_dir: str, out: str) -> None:
    cfg = build_config(["--data", data_dir, "--output", out], env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 3  # type: ignore[misc]


def test_direct_construction_validates() -> None:
    cfg = TrainConfig(data="gs://bkt/d", output="gs://bkt/o", image_size="64")
    assert cfg.image_size == (64, 64) and cfg.checkpoint_dir == "gs://bkt/o/checkpoints"
    with pytest.raises(ConfigError, match=r"--epochs \(TRAINER_EPOCHS\): must be a positive"):
        TrainConfig(data="gs://bkt/d", output="gs://bkt/o", epochs=0)


def test_models_constant_is_the_model_choice() -> None:
    (model,) = [f for f in FIELDS if f.name == "model"]
    assert (
        model.choices
        == tuple(MODELS)
        == (
            "small_cnn",
            "linear",
            "mobilenet_v3_small",
            "mobilenet_v3_large",
            "efficientnet_b0",
            "resnet50",
        )
    )
    assert all(isinstance(d, str) and d for d in MODELS.values())


def test_unknown_trainer_variable_warns_with_closest(
    caplog: pytest.LogCaptureFixture, data_dir: str, out: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="trainer.config.load"):
        cfg = build_config(["--data", data_dir, "--output", out], env={"TRAINER_EPOCH": "3"})
    assert cfg.epochs == 10
    assert "TRAINER_EPOCH" in caplog.text and "did you mean TRAINER_EPOCHS" in caplog.text


# --- Bad configurations --------------------------------------------------------------------

# Every case gets --data DIR --output DIR first (a later flag wins); NO_DATA / NO_OUTPUT drop
# them, and {tmp} is the test's temporary directory (holding list.dat, a non-manifest file).
BAD: list[tuple[str, list[str], dict[str, str], str | None, list[str]]] = [
    # id, argv, env, config file text (c.yaml unless the id says otherwise), expected fragments
    (
        "epochs-zero",
        ["--epochs", "0"],
        {},
        None,
        ["--epochs (TRAINER_EPOCHS): must be a positive integer, got 0"],
    ),
    ("epochs-text", ["--epochs", "ten"], {}, None, ["--epochs", "TRAINER_EPOCHS", "got ten"]),
    ("batch-negative", ["--batch-size", "-1"], {}, None, ["--batch-size", "TRAINER_BATCH_SIZE"]),
    ("lr-zero", ["--learning-rate", "0"], {}, None, ["--learning-rate", "positive number"]),
    ("lr-nan", ["--learning-rate", "nan"], {}, None, ["TRAINER_LEARNING_RATE", "got nan"]),
    ("val-split-one", ["--val-split", "1"], {}, None, ["--val-split", "TRAINER_VAL_SPLIT", "< 1"]),
    ("image-size-small", ["--image-size", "4"], {}, None, ["--image-size", "TRAINER_IMAGE_SIZE"]),
    ("image-size-text", ["--image-size", "12,ab"], {}, None, ["--image-size", "H,W"]),
    ("image-size-big", ["--image-size", "5000,128"], {}, None, ["TRAINER_IMAGE_SIZE", "4096"]),
    ("image-size-3d", ["--image-size", "64,64,3"], {}, None, ["--image-size"]),
    ("missing-data", ["NO_DATA"], {}, None, ["--data (TRAINER_DATA): required"]),
    (
        "missing-output",
        ["NO_OUTPUT"],
        {},
        None,
        ["--output (TRAINER_OUTPUT): required", "AIP_MODEL_DIR"],
    ),
    (
        "s3-data",
        ["--data", "s3://bucket/images"],
        {},
        None,
        ["--data (TRAINER_DATA)", "s3:// is not supported", "gs://"],
    ),
    ("https-data", ["--data", "https://example.com/x"], {}, None, ["--data", "https://"]),
    ("gcs-scheme", ["--output", "gcs://bucket/run"], {}, None, ["--output", "gs://"]),
    (
        "bad-bucket",
        ["--data", "gs://My_Bucket/images"],
        {},
        None,
        ["TRAINER_DATA", "not a valid bucket name"],
    ),
    ("no-bucket", ["--output", "gs:///run"], {}, None, ["--output", "no bucket"]),
    (
        "manifest-ext-gcs",
        ["--data", "gs://bucket/list.json"],
        {},
        None,
        ["--data", "TRAINER_DATA", ".csv or .jsonl"],
    ),
    (
        "manifest-ext-local",
        ["--data", "{tmp}/list.dat"],
        {},
        None,
        ["--data", "TRAINER_DATA", "not a .csv or .jsonl manifest"],
    ),
    ("data-missing-dir", ["--data", "{tmp}/nowhere"], {}, None, ["--data", "does not exist"]),
    (
        "unknown-model",
        ["--model", "resnet5"],
        {},
        None,
        [
            "--model (TRAINER_MODEL)",
            "mobilenet_v3_small",
            "efficientnet_b0",
            "did you mean resnet50",
        ],
    ),
    (
        "bad-precision",
        ["--mixed-precision", "fp32"],
        {},
        None,
        ["--mixed-precision", "TRAINER_MIXED_PRECISION", "auto, off, bf16, fp16"],
    ),
    ("bad-remainder", ["--remainder", "keep"], {}, None, ["--remainder", "pad, drop"]),
    (
        "output-not-creatable",
        ["--output", "{tmp}/list.dat/run"],
        {},
        None,
        ["--output (TRAINER_OUTPUT)", "cannot create directory"],
    ),
    (
        "checkpoint-not-creatable",
        ["--checkpoint-dir", "{tmp}/list.dat/ck"],
        {},
        None,
        ["--checkpoint-dir", "TRAINER_CHECKPOINT_DIR", "cannot create"],
    ),
    (
        "batch-not-multiple",
        ["--batch-size", "30", "--cpu-replicas", "4"],
        {},
        None,
        ["--batch-size (TRAINER_BATCH_SIZE)", "--cpu-replicas (TRAINER_CPU_REPLICAS)", "28 or 32"],
    ),
    (
        "batch-below-replicas",
        ["--batch-size", "2", "--cpu-replicas", "4"],
        {},
        None,
        ["--batch-size", "--cpu-replicas", "use 4"],
    ),
    (
        "batch-vs-workers",
        ["--batch-size", "9", "--num-workers", "2", "--worker-service", "s", "--job-name", "j"],
        {},
        None,
        ["--batch-size", "TRAINER_NUM_WORKERS"],
    ),
    (
        "cpu-replicas-and-gpus",
        ["--cpu-replicas", "2", "--expect-gpus", "1"],
        {},
        None,
        ["--cpu-replicas (TRAINER_CPU_REPLICAS)", "--expect-gpus (TRAINER_EXPECT_GPUS)"],
    ),
    (
        "gate-without-validation",
        ["--min-val-accuracy", "0.9", "--val-split", "0"],
        {},
        None,
        ["--min-val-accuracy (TRAINER_MIN_VAL_ACCURACY)", "--val-split (TRAINER_VAL_SPLIT)"],
    ),
    (
        "workers-without-service",
        ["--num-workers", "2"],
        {},
        None,
        ["--num-workers (TRAINER_NUM_WORKERS)", "TRAINER_WORKER_SERVICE", "TRAINER_JOB_NAME"],
    ),
    ("cpu-replicas-range", ["--cpu-replicas", "65"], {}, None, ["--cpu-replicas", "1 to 64"]),
    ("fetch-threads-range", ["--fetch-threads", "0"], {}, None, ["TRAINER_FETCH_THREADS"]),
    ("prefetch-range", ["--prefetch-batches", "65"], {}, None, ["--prefetch-batches", "1 to 64"]),
    ("gate-range", ["--min-val-accuracy", "1.5"], {}, None, ["--min-val-accuracy", "0 to 1"]),
    ("seed-negative", ["--seed", "-1"], {}, None, ["--seed", "TRAINER_SEED"]),
    ("worker-port-range", ["--worker-port", "70000"], {}, None, ["--worker-port", "65535"]),
    (
        "timeout-over-deadline",
        ["--request-timeout-s", "90"],
        {},
        None,
        ["--request-timeout-s (TRAINER_REQUEST_TIMEOUT_S)", "--storage-deadline-s"],
    ),
    ("deadline-negative", ["--storage-deadline-s", "-5"], {}, None, ["--storage-deadline-s"]),
    (
        "cache-dir-gcs",
        ["--cache-dir", "gs://bucket/cache"],
        {},
        None,
        ["--cache-dir", "TRAINER_CACHE_DIR", "local directory"],
    ),
    (
        "init-weights-suffix",
        ["--init-weights", "gs://bucket/model.h5"],
        {},
        None,
        ["--init-weights", "TRAINER_INIT_WEIGHTS", ".keras or .weights.h5"],
    ),
    (
        "init-weights-missing",
        ["--init-weights", "{tmp}/none.keras"],
        {},
        None,
        ["--init-weights", "is not a file"],
    ),
    (
        "env-bad-int",
        [],
        {"TRAINER_EPOCHS": "abc"},
        None,
        ["TRAINER_EPOCHS (--epochs): must be a positive integer, got abc"],
    ),
    (
        "env-bad-bool",
        [],
        {"TRAINER_SCALE_LR": "maybe"},
        None,
        ["TRAINER_SCALE_LR (--scale-lr)", "true or false"],
    ),
    ("env-bad-data", ["NO_DATA"], {"TRAINER_DATA": "s3://b/x"}, None, ["TRAINER_DATA (--data)"]),
    (
        "file-unknown-key",
        [],
        {},
        "batchsize: 8\n",
        ["--config (TRAINER_CONFIG)", "unknown key 'batchsize'", "did you mean batch_size"],
    ),
    ("file-bad-value", [], {}, "epochs: -1\n", ["epochs in", "--epochs", "TRAINER_EPOCHS"]),
    ("file-bool-as-int", [], {}, "epochs: true\n", ["--epochs", "got true"]),
    ("file-bad-yaml", [], {}, "epochs: [1, 2\n", ["--config", "not valid YAML", "line"]),
    ("file-bad-json", [], {}, "{'epochs': 1}", ["--config", "not valid JSON", "line 1"]),
    ("file-not-mapping", [], {}, "- epochs\n- 3\n", ["--config", "must hold a mapping"]),
    (
        "file-missing",
        ["--config", "{tmp}/missing.yaml"],
        {},
        None,
        ["--config (TRAINER_CONFIG)", "cannot read", "No such file"],
    ),
    (
        "file-from-env-missing",
        [],
        {"TRAINER_CONFIG": "{tmp}/missing.json"},
        None,
        ["TRAINER_CONFIG (--config)", "cannot read"],
    ),
    ("file-suffix", ["--config", "{tmp}/c.toml"], {}, None, ["--config", ".yaml, .yml, .json"]),
    (
        "unknown-flag",
        ["--epoch", "3"],
        {},
        None,
        ["unrecognized arguments: --epoch", "did you mean --epochs"],
    ),
    ("flag-missing-value", ["--epochs"], {}, None, ["--epochs", "expected one argument"]),
]


@pytest.mark.parametrize(
    ("argv", "env", "file_text", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_config_is_one_line_naming_the_option(
    tmp_path: Path,
    data_dir: str,
    out: str,
    argv: list[str],
    env: dict[str, str],
    file_text: str | None,
    expected: list[str],
) -> None:
    (tmp_path / "list.dat").write_text("a,b\n")
    base = {"--data": data_dir, "--output": out}
    extra: list[str] = []
    for arg in argv:
        if arg in ("NO_DATA", "NO_OUTPUT"):
            del base["--" + arg[3:].lower()]
        else:
            extra.append(arg.replace("{tmp}", str(tmp_path)))
    args = [x for pair in base.items() for x in pair]
    env = {k: v.replace("{tmp}", str(tmp_path)) for k, v in env.items()}
    if file_text is not None:
        suffix = ".json" if file_text.startswith("{") else ".yaml"
        extra += ["--config", write(tmp_path, "c" + suffix, file_text)]
    with pytest.raises(ConfigError) as info:
        build_config(args + extra, env=env)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_enough_distinct_bad_cases() -> None:
    assert len({b[0] for b in BAD}) == len(BAD) >= 20


# --- Docs and imports ----------------------------------------------------------------------


def test_docs_match_the_field_table() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()
    assert doc == config_markdown(), (
        "docs/configuration.md is stale: run .venv/bin/python -m trainer.config.docs > "
        "docs/configuration.md"
    )
    for f in FIELDS:
        assert f"`{f.flag}`" in doc and f"`{f.env}`" in doc
    for needle in ("AIP_MODEL_DIR", "AIP_CHECKPOINT_DIR", "AIP_TENSORBOARD_LOG_DIR", "| 143 |"):
        assert needle in doc


def test_every_docs_table_row_has_as_many_cells_as_its_header() -> None:
    # GitHub drops the cells past the header's count: a row longer than its header loses text.
    header = 0
    for line in config_markdown().splitlines():
        if not line.startswith("|"):
            header = 0
            continue
        cells = len(line.replace("\\|", "").strip("|").split("|"))
        if header == 0:
            header = cells
        assert cells == header, line


def test_building_and_validating_does_not_import_tensorflow(data_dir: str, out: str) -> None:
    # A fresh interpreter: this test process may have imported TensorFlow for other tests.
    code = (
        "import sys\n"
        "from trainer.config import build_config\n"
        "from trainer.errors import ConfigError\n"
        f"cfg = build_config(['--data', {data_dir!r}, '--output', {out!r}], env={{}})\n"
        "try:\n"
        "    build_config(['--data', 's3://x/y', '--output', 'gs://b/o'], env={})\n"
        "except ConfigError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('no ConfigError')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_cache_dir_without_size_is_off_and_says_so(
    caplog: pytest.LogCaptureFixture, data_dir: str, out: str, tmp_path: Path
) -> None:
    cache = str(tmp_path / "cache")
    with caplog.at_level(logging.INFO, logger="trainer.config.load"):
        cfg = build_config(["--data", data_dir, "--output", out], env={"TRAINER_CACHE_DIR": cache})
    assert cfg.cache_dir == cache and cfg.cache_size_mb == 0
    assert "image cache is off" in caplog.text
    sized = build_config(
        ["--data", data_dir, "--output", out, "--cache-size-mb", "64"],
        env={"TRAINER_CACHE_DIR": cache},
    )
    assert sized.cache_size_mb == 64 and Path(cache).is_dir()  # probed, so created


@pytest.mark.parametrize(
    ("value", "message"),
    [("cat,dog,cat", "names cat more than once"), ("cat,,dog", "empty class name")],
)
def test_classes_are_each_named_once(value: str, message: str, tmp_path) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(
            ["--data", str(tmp_path), "--output", str(tmp_path / "o"), "--classes", value], env={}
        )


def test_class_names_are_trimmed_alike_in_train_and_pack() -> None:
    from trainer.config.validate import class_names

    assert class_names(" cat , dog", "--classes") == ("cat", "dog")


@pytest.mark.parametrize(
    ("data", "extra", "message"),
    [
        ("{d}", ["--output", "{d}/run"], r"--output .*/run is inside --data"),
        ("{d}/.", ["--output", "{d}/run"], r"--output .*/run is inside --data"),
        ("{link}", ["--output", "{d}/run"], r"--output .*/run is inside --data"),
        ("{d}", ["--output", "{t}/o", "--checkpoint-dir", "{d}/ck"], r"--checkpoint-dir .*"),
        ("{d}", ["--output", "{t}/o", "--tensorboard-dir", "{d}//tb"], r"--tensorboard-dir .*"),
        ("{d}", ["--output", "{t}"], r"--data .* is inside --output"),
        ("gs://bkt/d", ["--output", "gs://bkt/d/./run"], r"gs://bkt/d/./run is inside --data"),
        ("gs://bkt/d/.", ["--output", "gs://bkt/d/run"], r"gs://bkt/d/run is inside --data"),
        ("gs://bkt/d/x", ["--output", "gs://bkt/d"], r"gs://bkt/d/x is inside --output"),
    ],
)
def test_paths_that_feed_into_each_other_are_refused(data_dir, tmp_path, data, extra, message):
    (tmp_path / "link").symlink_to(data_dir)
    names = {"d": data_dir, "t": str(tmp_path), "link": str(tmp_path / "link")}
    argv = ["--data", data.format(**names), *(a.format(**names) for a in extra)]
    with pytest.raises(ConfigError, match=message):
        build_config(argv, env={})


def test_outputs_beside_the_data_or_its_manifest_are_fine(data_dir, tmp_path):
    build_config(["--data", data_dir, "--output", f"{data_dir}-run"], env={})
    manifest = tmp_path / "m.csv"
    manifest.write_text("uri,label\n")
    build_config(["--data", str(manifest), "--output", str(tmp_path / "run")], env={})
    build_config(["--data", "gs://bkt/d", "--output", "gs://bkt/d-run"], env={})
