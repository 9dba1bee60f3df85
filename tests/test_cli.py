"""The `trainer` command line: exit codes, one-line errors, --help, version, logging setup."""

from __future__ import annotations

import importlib.metadata
import io
import logging
import os
import re
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from trainer import cli
from trainer.config import FIELDS, TrainConfig
from trainer.errors import QualityGateError, StorageUnavailableError
from trainer.logs import is_tty, setup_logging

REPO = Path(__file__).resolve().parents[1]
# Hang guard only: a bad configuration exits long before this, and speed is never asserted.
HANG_GUARD_S = 120


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without TRAINER_* / AIP_* settings that would change results."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TRAINER_", "AIP_")) and k != "TF_CPP_MIN_LOG_LEVEL"
    }
    return env | extra


def run_trainer(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        cwd=REPO,
        env=clean_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        check=False,
    )


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """main() and setup_logging() configure the root logger; put it back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train"], "--data (TRAINER_DATA): required"),
        (
            ["train", "--data", "gs://bucket/x", "--output", "gs://bucket/o", "--epochs", "0"],
            "--epochs (TRAINER_EPOCHS): must be a positive integer, got 0",
        ),
        (["train", "--data", "s3://bucket/x", "--output", "gs://bucket/o"], "s3://"),
        (
            ["train", "--data", "gs://bucket/x", "--output", "gs://bucket/o", "--model", "vgg"],
            "--model (TRAINER_MODEL)",
        ),
        (["train", "--epoch", "3"], "did you mean --epochs"),
        (["train", "--batch-size"], "--batch-size"),
        (["fly"], "invalid choice"),
        ([], "required"),
    ],
    ids=[
        "missing-data",
        "epochs-zero",
        "s3",
        "model",
        "unknown-flag",
        "no-value",
        "command",
        "no-command",
    ],
)
def test_bad_config_exits_2_with_one_line(args: list[str], expected: str) -> None:
    result = run_trainer(*args)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert "Traceback" not in result.stderr and "usage:" not in result.stderr
    assert result.stdout == ""


def test_bad_env_variable_exits_2_naming_it() -> None:
    env = clean_env(
        TRAINER_DATA="gs://bucket/x", TRAINER_OUTPUT="gs://bucket/o", TRAINER_BATCH_SIZE="lots"
    )
    result = run_trainer("train", env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: TRAINER_BATCH_SIZE (--batch-size): must be a positive integer, got lots"
    ]


def test_bad_config_does_not_import_tensorflow() -> None:
    code = (
        "import sys\n"
        "from trainer.cli import main\n"
        "rc = main(['train', '--data', 'gs://bucket/x', '--output', 'gs://bucket/o',"
        " '--cpu-replicas', '2', '--expect-gpus', '1'])\n"
        "print(rc, sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        check=False,
    )
    assert result.stdout.strip() == "2 []", result.stderr
    assert "--expect-gpus (TRAINER_EXPECT_GPUS)" in result.stderr


def test_help_lists_every_flag_and_env_variable() -> None:
    result = run_trainer("train", "--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for f in FIELDS:
        assert re.search(rf"^\s+{re.escape(f.flag)}\b", text, re.MULTILINE), f.flag
        assert f"[{f.env};" in text, f.env
    for needle in ("--config", "TRAINER_CONFIG", "AIP_MODEL_DIR", "--no-scale-lr", "143"):
        assert needle in text
    top = run_trainer("--help")
    assert top.returncode == 0 and "train" in top.stdout and "version" in top.stdout


def test_version() -> None:
    result = run_trainer("version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"streamtrain {importlib.metadata.version('streamtrain')}\n"


# --- Dispatch to the training loop -----------------------------------------------------------
# The real trainer.job imports TensorFlow and trains; these tests put a small module in its
# place to check how main() maps run()'s outcomes to exit codes.


def install_run(monkeypatch: pytest.MonkeyPatch, run: Callable[[TrainConfig], int]) -> None:
    module = types.ModuleType("trainer.job")

    def job_run(config: TrainConfig, *, hooks: object = None) -> int:
        return run(config)

    module.run = job_run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "trainer.job", module)


@pytest.fixture
def train_args(tmp_path: Path) -> list[str]:
    (tmp_path / "data" / "a").mkdir(parents=True)
    return ["train", "--data", str(tmp_path / "data"), "--output", str(tmp_path / "out"), "-q"]


@pytest.fixture
def no_trainer_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("TRAINER_", "AIP_")):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("restore_logging", "no_trainer_env")
def test_train_passes_the_config_and_returns_run_exit_code(
    monkeypatch: pytest.MonkeyPatch, train_args: list[str]
) -> None:
    seen: list[TrainConfig] = []

    def run(config: TrainConfig) -> int:
        seen.append(config)
        return 0 if config.epochs == 3 else 7

    install_run(monkeypatch, run)
    assert cli.main([*train_args, "--epochs", "3"]) == 0
    assert cli.main([*train_args, "--epochs", "4"]) == 7
    assert [c.epochs for c in seen] == [3, 4] and seen[0].output.endswith("out")


@pytest.mark.usefixtures("restore_logging", "no_trainer_env")
@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (
            QualityGateError("validation accuracy 0.40 is below --min-val-accuracy 0.9"),
            3,
            "error: validation accuracy 0.40 is below --min-val-accuracy 0.9\n",
        ),
        (
            StorageUnavailableError("gs://b/x: 503 for 60 s\nretry later"),
            5,
            "error: gs://b/x: 503 for 60 s retry later\n",
        ),
        (KeyboardInterrupt(), 130, "error: interrupted\n"),
    ],
    ids=["quality-gate", "storage", "interrupt"],
)
def test_run_errors_become_one_line_and_exit_code(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    train_args: list[str],
    error: BaseException,
    code: int,
    line: str,
) -> None:
    def run(config: TrainConfig) -> int:
        raise error

    install_run(monkeypatch, run)
    assert cli.main(train_args) == code
    assert capsys.readouterr().err == line


@pytest.mark.usefixtures("restore_logging", "no_trainer_env")
def test_unexpected_exception_logs_traceback_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], train_args: list[str]
) -> None:
    def run(config: TrainConfig) -> int:
        raise RuntimeError("boom")

    install_run(monkeypatch, run)
    assert cli.main(train_args) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: boom" in err and " ERROR " in err


# --- Logging --------------------------------------------------------------------------------


@pytest.mark.usefixtures("restore_logging")
def test_setup_logging_one_line_per_record_and_replaces_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    first, second = io.StringIO(), io.StringIO()
    setup_logging(0, stream=first)
    setup_logging(0, stream=second)  # replaces the first handler instead of adding one
    log = logging.getLogger("trainer.test")
    log.info("epoch %d done", 3)
    log.debug("hidden at verbosity 0")
    assert first.getvalue() == ""
    (line,) = second.getvalue().splitlines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO epoch 3 done", line), line
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"


@pytest.mark.usefixtures("restore_logging")
def test_setup_logging_levels_and_user_tf_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    stream = io.StringIO()
    setup_logging(1, stream=stream)
    logging.getLogger("trainer.test").debug("shown at -v")
    logging.getLogger("urllib3.connectionpool").debug("library noise")
    assert "shown at -v" in stream.getvalue() and "library noise" not in stream.getvalue()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"  # the user's choice is kept
    quiet = io.StringIO()
    setup_logging(-1, stream=quiet)
    logging.getLogger("trainer.test").info("not shown at -q")
    logging.getLogger("trainer.test").warning("shown at -q")
    assert quiet.getvalue().count("\n") == 1 and "WARNING shown at -q" in quiet.getvalue()


def test_is_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert is_tty() is False
    read_fd, write_fd = os.openpty()
    try:
        with os.fdopen(write_fd, "w", closefd=False) as terminal:
            monkeypatch.setattr(sys, "stdout", terminal)
            assert is_tty() is True
    finally:
        os.close(read_fd)
        os.close(write_fd)
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stdout", closed)
    assert is_tty() is False
