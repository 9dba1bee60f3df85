"""--log-format json: one JSON object per line, as GKE's agent reads for Cloud Logging."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import pytest

from trainer.logs import setup_logging


@pytest.fixture
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:], root.level = handlers, level


def test_json_records_carry_severity_message_and_fields(restore_root_logger):
    stream = io.StringIO()
    setup_logging(0, stream=stream, fmt="json")
    logging.getLogger("trainer.x").info("epoch %d done", 3, extra={"fields": {"loss": 0.5}})
    logging.getLogger("trainer.x").warning("careful")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["severity"] == "INFO" and first["message"] == "epoch 3 done"
    assert first["loss"] == 0.5 and first["logger"] == "trainer.x"
    assert first["time"].endswith("Z")
    assert second["severity"] == "WARNING"


def test_text_stays_the_default(restore_root_logger):
    stream = io.StringIO()
    setup_logging(0, stream=stream)
    logging.getLogger("trainer.x").info("plain")
    assert stream.getvalue().rstrip().endswith("INFO plain")


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_bad_configuration_ends_with_one_json_error_line(tmp_path, how):
    args = [sys.executable, "-m", "trainer", "train", "--data", str(tmp_path / "missing")]
    args += ["--output", str(tmp_path / "out")]
    env = dict(os.environ)
    if how == "flag":
        args.append("--log-format=json")
    else:
        env["TRAINER_LOG_FORMAT"] = "json"
    proc = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 2
    lines = [json.loads(line) for line in proc.stderr.splitlines()]
    assert lines[-1]["severity"] == "ERROR"
    assert lines[-1]["message"].startswith("error: --data")
