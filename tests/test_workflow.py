"""The CI retraining workflow: schema-valid, keyless, and wired to the launcher's real flags.

.venv/bin/pytest tests/test_workflow.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from streamtrain_launcher.cli import ENV_PREFIX, build_parser

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "retrain.yml"


def load() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def steps() -> list[dict]:
    (job,) = load()["jobs"].values()
    return job["steps"]


def step(name_part: str) -> tuple[int, dict]:
    for index, s in enumerate(steps()):
        if name_part in (s.get("name") or s.get("uses") or ""):
            return index, s
    raise AssertionError(f"no step {name_part!r}")


def test_passes_the_github_workflow_schema():
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            "--builtin-schema",
            "vendor.github-workflows",
            str(WORKFLOW),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_triggers_on_data_manifest_schedule_and_by_hand():
    # PyYAML reads the key `on` as True.
    triggers = load()[True]
    assert triggers["push"]["paths"] == ["data/manifest.csv"]
    assert triggers["schedule"][0]["cron"]
    assert "workflow_dispatch" in triggers


def test_authenticates_with_workload_identity_and_no_keys():
    workflow = load()
    assert workflow["permissions"]["id-token"] == "write"
    _, auth = step("google-github-actions/auth")
    assert set(auth["with"]) == {"workload_identity_provider", "service_account"}
    assert "secrets." not in WORKFLOW.read_text()


def test_builds_image_tagged_with_git_sha_and_runs_it_by_digest():
    build_index, build = step("Build and push")
    assert build["with"]["push"] is True
    assert build["with"]["tags"].endswith(":${{ github.sha }}")
    launch_index, launch = step("Train on GKE")
    assert build_index < launch_index
    assert "steps.build.outputs.digest" in launch["env"]["LAUNCH_IMAGE"]
    # The launcher installed from its own wheel (no TensorFlow), not from a checkout path.
    assert launch["run"] == "streamtrain-launch"
    _, install = step("Install the launcher")
    assert install["run"] == "pip install ./scripts/launcher"
    assert launch["env"]["LAUNCH_WAIT"] == "true"


def test_launch_environment_names_real_launcher_flags():
    parser = build_parser({})
    dests = {action.dest.upper() for action in parser._actions}
    _, launch = step("Train on GKE")
    for name in launch["env"]:
        assert name.startswith(ENV_PREFIX)
        assert name.removeprefix(ENV_PREFIX) in dests, name


def test_promotes_only_a_blessed_model_after_training():
    launch_index, _ = step("Train on GKE")
    promote_index, promote = step("Promote")
    assert promote_index > launch_index
    # A failed launch (any non-zero exit) stops the job before promotion.
    assert "if" not in promote
    script = promote["run"]
    assert "/BLESSED" in script.split("rsync")[0], "check BLESSED before copying anything"
    assert "exit 0" in script.split("rsync")[0]
    assert "models/latest" in promote["env"]["LATEST_PREFIX"]
