"""The launcher's exit codes: the trainer's own where its pod reported one, then the launcher's.

    raise LaunchError("Job streamtrain-x: 409 AlreadyExists ...", LaunchExit.CONFLICT)

The trainer's codes (trainer.errors.ExitCode) pass through unchanged; the launcher's start
at 10 so that a CI step can tell "the training failed" from "the submission failed". The
launcher is installed without the trainer, so the shared codes are written out here;
tests/test_launcher.py checks that they equal the trainer's.
"""

from __future__ import annotations

import enum


class LaunchExit(enum.IntEnum):
    OK = 0
    BAD_INPUT = 2  # a launcher flag, or the trainer's configuration or data
    QUALITY_GATE = 3
    NO_GPU = 4
    STORAGE_UNAVAILABLE = 5
    JOB_FAILED = 10  # out of retries (BackoffLimitExceeded, ReachedMaxRestarts) or failed otherwise
    JOB_DEADLINE = 11  # the Job ran past activeDeadlineSeconds (DeadlineExceeded)
    TIMEOUT = 12  # --timeout reached while waiting; the Job is left running
    API_DENIED = 13  # 401 Unauthorized or 403 Forbidden from the API server
    API_UNREACHABLE = 14  # no API server at the address, or no usable kubeconfig
    CONFLICT = 15  # 409: an object with that name exists
    INVALID = 16  # 422: the API server rejected the manifest
    JOB_DELETED = 17  # the Job was deleted while the launcher followed it
    API_ERROR = 18  # any other API server error (5xx, unexpected status)


# Shown by --help and in docs/operations.md.
EXIT_CODE_HELP = """\
exit codes:
  0   the Job (or JobSet) completed
  2   bad launcher input, or the trainer rejected its configuration or data
  3   the trainer's quality gate failed
  4   the trainer saw fewer GPUs than requested
  5   the object store stayed unavailable through the last retry
  10  the Job failed: out of retries (BackoffLimitExceeded; a JobSet: ReachedMaxRestarts)
      or another failure
  11  the Job ran past its activeDeadlineSeconds (DeadlineExceeded)
  12  --timeout reached while waiting (the Job keeps running); the reason is printed
      (why pods are Pending, or what Kueue's Workload waits for)
  13  the API server refused the credentials (401) or the action (403)
  14  the API server is unreachable, or no kubeconfig / in-cluster config is usable
  15  an object with the Job's name already exists (409)
  16  the API server rejected the manifest as invalid (422)
  17  the Job was deleted while the launcher followed it
  18  any other API server error
"""


class LaunchError(Exception):
    """An error with a one-line message for the user and the exit code it maps to."""

    def __init__(self, message: str, exit_code: LaunchExit) -> None:
        super().__init__(message)
        self.exit_code = exit_code
