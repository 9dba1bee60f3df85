"""Errors the trainer reports to its user, each mapped to a documented exit code.

The CLI catches `TrainerError`, prints its message as one line (no traceback) and exits
with `exit_code`. The Kubernetes manifests' `podFailurePolicy` keys off these codes, so
they are part of the public contract: change them only together with `k8s/` and the README.

    try:
        ...
    except TrainerError as e:
        logger.error("%s", e)
        sys.exit(e.exit_code)
"""

from __future__ import annotations

import enum
import errno
import re
import shutil


class ExitCode(enum.IntEnum):
    OK = 0
    CRASH = 1  # anything unexpected: a bug, reported with its traceback
    BAD_INPUT = 2  # bad configuration or input data: retrying will not help
    QUALITY_GATE = 3  # trained, but below --min-val-accuracy
    NO_GPU = 4  # fewer GPUs visible than --expect-gpus
    STORAGE_UNAVAILABLE = 5  # object store failed past the retry deadline: retry later
    PEER_LOST = 6  # a multi-worker peer stopped answering: restart the job, it resumes
    STALLED = 7  # no step finished within --stall-timeout-s: restart the job, it resumes
    TERMINATED = 143  # SIGTERM: checkpoint written, the run resumes when restarted


class TrainerError(Exception):
    """Base class: an error with a one-line message meant for the user."""

    exit_code: ExitCode = ExitCode.CRASH


class ConfigError(TrainerError):
    """A flag, environment variable or config-file key is missing or invalid."""

    exit_code = ExitCode.BAD_INPUT


class DataError(TrainerError):
    """The dataset cannot be used: nothing found, one class, a bad manifest line, a bad image."""

    exit_code = ExitCode.BAD_INPUT


class StorageNotFoundError(DataError):
    """A bucket, prefix or object does not exist."""


class StoragePermissionError(DataError):
    """The credentials in use may not read or write the object."""


class WriteError(DataError):
    """The file system refused a write: read-only, full, over quota or not permitted."""


class StorageUnavailableError(TrainerError):
    """The object store kept failing with transient errors past the retry deadline."""

    exit_code = ExitCode.STORAGE_UNAVAILABLE


class PeerLostError(TrainerError):
    """Another worker of a multi-worker job died or stopped answering collectives."""

    exit_code = ExitCode.PEER_LOST


class QualityGateError(TrainerError):
    exit_code = ExitCode.QUALITY_GATE


class GpuMissingError(TrainerError):
    exit_code = ExitCode.NO_GPU


class TerminatedError(TrainerError):
    """SIGTERM was received; a checkpoint was written and the job can be restarted."""

    exit_code = ExitCode.TERMINATED


# errno -> (what happened, what to do), for the file-system errors a retry does not fix.
_ENVIRONMENT_ERRNOS = {
    errno.EROFS: ("read-only file system", "write to a writable local directory or gs://"),
    errno.ENOSPC: ("no space left on the device", "free space or write to a larger disk"),
    errno.EDQUOT: ("disk quota exceeded", "free space, raise the quota or write elsewhere"),
    errno.EACCES: ("permission denied", "check the owner and mode of the folder"),
    errno.EPERM: ("operation not permitted", "check the owner and mode of the folder"),
}
_ERRNO_TEXT = re.compile(r"\[Errno (\d+)\]")


def write_error(exc: OSError, path: str | None = None) -> WriteError | None:
    """`exc` as a one-line WriteError naming the file, when it is a read-only, full or
    over-quota disk or a refused permission and a path is known; otherwise None (a bug)."""
    code, where = exc.errno, exc.filename or path
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list):
        # copytree gathers its failures as (source, destination, "[Errno N] ...") triples.
        for entry in exc.args[0]:
            found = _ERRNO_TEXT.search(str(entry[-1])) if isinstance(entry, tuple) else None
            if found and int(found.group(1)) in _ENVIRONMENT_ERRNOS:
                code, where = int(found.group(1)), path or entry[1]
                break
    if code not in _ENVIRONMENT_ERRNOS or not where:
        return None
    what, advice = _ENVIRONMENT_ERRNOS[code]
    return WriteError(f"{where}: {what} ({errno.errorcode[code]}); {advice}")
