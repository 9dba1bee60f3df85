"""docs/configuration.md, generated from the field table: `python -m trainer.config.docs`."""

from __future__ import annotations

import sys

from trainer.config.spec import AIP_DEFAULTS, EXIT_CODE_MEANINGS, GROUPS, MODELS
from trainer.config.table import FIELD_BY_NAME, FIELDS

_TABLE_HEADER = "| Flag | Environment variable | Config key | Type | Default | Meaning |"


def config_markdown() -> str:
    """docs/configuration.md, generated from the field table (a test keeps them equal)."""
    out = [
        "# Configuration",
        "",
        "<!-- Generated from the fields of trainer/config/fields.py; do not edit by hand.",
        "     Regenerate: .venv/bin/python -m trainer.config.docs > docs/configuration.md -->",
        "",
        "`python -m trainer train [options]` (or the `trainer train` console script) reads one",
        "typed configuration. Every option has a flag, an environment variable and a config-file",
        "key, all derived from one field name: `batch_size` is `--batch-size`,",
        "`TRAINER_BATCH_SIZE` and `batch_size:`. The configuration is validated before TensorFlow",
        "is imported, so a mistake fails within a second with exit code 2 and one line naming",
        "the option, e.g. `error: --epochs (TRAINER_EPOCHS): must be a positive integer, got 0`.",
        "",
        "## Precedence",
        "",
        "Highest first:",
        "",
        "1. the flag (`--epochs 5`);",
        "2. the environment variable (`TRAINER_EPOCHS=5`); an empty variable counts as unset;",
        "3. the config file named by `--config PATH` or `TRAINER_CONFIG`: a YAML (`.yaml`,",
        "   `.yml`) or JSON (`.json`) mapping of field names to values; an unknown key is an",
        "   error, and so is a file over 1 MiB, nested over 32 levels or holding over 100000",
        "   values once YAML aliases are expanded;",
        "4. Vertex AI's `AIP_*` variables, for the three options they cover (below);",
        "5. the default.",
        "",
        "Booleans accept `--flag`/`--no-flag`, and `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`",
        "in variables. An unknown `TRAINER_*` variable is ignored with a warning naming the",
        "closest known one. Relative paths are relative to the working directory.",
        "",
        "```yaml",
        "# train.yaml: python -m trainer train --config train.yaml --epochs 3",
        "data: gs://my-bucket/flowers",
        "output: gs://my-bucket/runs/flowers-1",
        "model: mobilenet_v3_small",
        "image_size: [224, 224]",
        "batch_size: 64",
        "scale_lr: true",
        "```",
        "",
        "`-v` (debug logs) and `-q` (warnings and errors only) are command-line only.",
        "",
        "## Options",
    ]
    for group in GROUPS:
        out += [
            "",
            f"### {group}",
            "",
            _TABLE_HEADER,
            "|" + "---|" * _TABLE_HEADER.count(" | ") + "---|",
        ]
        for f in (f for f in FIELDS if f.group == group):
            flag = f"`{f.flag}`" + (f" / `--no-{f.flag[2:]}`" if f.kind == "bool" else "")
            meaning = f.help[0].upper() + f.help[1:] + "."
            if f.name == "model":
                meaning += " " + "; ".join(f"`{n}`: {d}" for n, d in MODELS.items()) + "."
            out.append(
                f"| {flag} | `{f.env}` | `{f.name}` | {f.type_text()} | "
                f"{_md(f.default_display())} | {_md(meaning)} |"
            )
    out += [
        "",
        "The multi-worker options are normally set by the Kubernetes manifests through the",
        "environment. `JOB_COMPLETION_INDEX` (set by Kubernetes for an Indexed Job) and",
        "`TF_CONFIG` are read by the distribution strategy code, not by this configuration.",
        "",
        "## Rules across options",
        "",
        "- `--batch-size` is the global batch: a multiple of `--cpu-replicas` x `--num-workers`.",
        "- `--cpu-replicas` above 1 and `--expect-gpus` above 0 exclude each other.",
        "- `--min-val-accuracy` needs `--val-split` above 0, and at least one validation object",
        "  (checked once the data is listed, before training).",
        "- `--num-workers` above 1 needs `--worker-service` and `--job-name`.",
        "- `--request-timeout-s` may not exceed `--storage-deadline-s`.",
        "- `--data`, `--output`, `--checkpoint-dir`, `--tensorboard-dir`, `--index` and",
        "  `--init-weights` take `gs://BUCKET/PATH` or a local path; other schemes (`s3://`,",
        "  `https://`, ...) are rejected. A manifest must end in `.csv` or `.jsonl`.",
        "- A local `--data` and `--init-weights` must exist; local output directories are",
        "  created and probed with a test file before training starts, gs:// ones (`--output`,",
        "  `--checkpoint-dir`, `--tensorboard-dir`) with a test object before TensorFlow starts.",
        "- A packed `--data` (an `index.json` of `trainer pack`) takes `--classes` as class",
        "  folders do (those classes, in that order); `--index` is refused with it.",
        "",
        "## Vertex AI",
        "",
        "Vertex AI custom training sets these variables; each one is the default of an option",
        "(the option's flag, `TRAINER_*` variable or config-file key still wins).",
        "",
        "| Variable | Default of |",
        "|---|---|",
    ]
    out += [f"| `{var}` | `{FIELD_BY_NAME[name].flag}` |" for name, var in AIP_DEFAULTS.items()]
    out += [
        "",
        "## Exit codes",
        "",
        "| Code | Meaning |",
        "|---|---|",
    ]
    out += [f"| {int(code)} | {_md(text)} |" for code, text in EXIT_CODE_MEANINGS.items()]
    return "\n".join(out) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


if __name__ == "__main__":
    sys.stdout.write(config_markdown())
