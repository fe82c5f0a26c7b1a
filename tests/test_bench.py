"""`mha-ft bench`: the quick run end to end through the CLI, its JSON, the length samplers, and bad options."""

from __future__ import annotations

import json
from pathlib import Path
import random
import statistics

import pytest
import torch
from typer.testing import CliRunner

from conftest import SHARED_DATA
from hf_mha.bench import lengths_with_padding, resolve_settings, run_bench, sample_lengths
from hf_mha.bench_measure import VOCAB_SIZE, bert_config, matmuls_alone_step
from hf_mha.errors import UserError
from hf_mha_cli.main import app, main

SST2_TRAIN = SHARED_DATA / "sst2" / "train.tsv"
needs_sst2 = pytest.mark.skipif(not SST2_TRAIN.is_file(), reason="needs ../shared/data/sst2/train.tsv")

RECORD_FIELDS = {"section", "implementation", "mode", "seq_len", "pad_ratio", "real_tokens", "step_ms",
                 "real_tokens_per_s", "vs_stock_sdpa", "peak_memory_mib", "mfu", "backend"}


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    result = CliRunner().invoke(app, ["bench", "--quick", "--threads", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text()), result.output


def test_quick_bench_prints_header_and_tables(quick_report):
    _, output = quick_report
    for text in ("machine", "torch", "transformers", "dtype", "threads", "attention: forward+backward",
                 "train_step: forward+backward+AdamW", "vs stock sdpa"):
        assert text in output, text


def test_quick_bench_json_has_every_implementation_with_positive_numbers(quick_report):
    report, _ = quick_report
    header, records = report["header"], report["records"]
    assert {"machine", "torch", "transformers", "dtype", "threads", "settings"} <= set(header)
    for record in records:
        assert set(record) == RECORD_FIELDS
        assert record["step_ms"] > 0 and record["real_tokens_per_s"] > 0 and record["vs_stock_sdpa"] > 0
    attention = {(r["implementation"], r["mode"]) for r in records if r["section"] == "attention"}
    for implementation in ("stock eager", "stock sdpa", "ours sdpa padded", "ours sdpa unpadded",
                           "ours reference padded", "ours reference unpadded"):
        assert (implementation, "forward") in attention and (implementation, "forward+backward") in attention
    assert ("ours flex unpadded", "forward") in attention
    assert "lengths from built-in log-normal fit of SST-2" in header["train_step"]
    train = [r for r in records if r["section"] == "train_step"]
    assert [r["implementation"] for r in train] == ["stock sdpa", "ours auto unpadded",
                                                    "ours + lazy embeddings + fast dropout",
                                                    "matrix products alone (bound)"]
    assert train[0]["vs_stock_sdpa"] == 1.0
    assert train[1]["backend"] in ("sdpa", "varlen", "nested")
    # CPU MFU: against the GEMM peak this process measured, so a share of one, never above.
    assert header["mfu_peak_tflops"] > 0 and all(0 < r["mfu"] < 1 for r in records)


@pytest.mark.parametrize("dtype, rows", [(torch.float32, [37, 100]), (torch.bfloat16, [48, 112])])
def test_matrix_products_alone_do_the_encoder_products_on_the_rows_the_layers_use(dtype, rows):
    # bf16 on CPU rounds the packed rows as the unpadded layers do (packed_rows); fp32 keeps them exact.
    from torch.utils.flop_counter import FlopCounterMode

    config = bert_config("tiny", VOCAB_SIZE)
    step = matmuls_alone_step(config, [[20, 17], [60, 40]], "cpu", dtype)
    d, ff = config.hidden_size, config.intermediate_size
    weights_per_layer = 3 * d * d + d * d + 2 * d * ff
    for round_, n in enumerate(rows):
        with FlopCounterMode(display=False) as counter:
            step(round_)
        # forward, input gradient, weight gradient: 3 products of 2 x rows x in x out FLOPs each
        assert counter.get_total_flops() == 6 * n * weights_per_layer * config.num_hidden_layers


def test_profile_splits_the_step_time_into_categories(tmp_path):
    out = tmp_path / "profile.json"
    result = CliRunner().invoke(app, ["bench", "--quick", "--profile", "--section", "profile", "--threads", "1",
                                      "--json", str(out)])
    assert result.exit_code == 0, result.output
    profile = json.loads(out.read_text())["profile"]
    from hf_mha.bench_profile import CATEGORIES

    cases = {(r["size"], r["lengths"], r["setup"]) for r in profile}
    assert cases == {("tiny", lengths, setup) for lengths in ("sst2", "conll") for setup in ("plain", "mha-ft")}
    for r in profile:
        assert list(r["shares"]) == list(CATEGORIES)
        assert sum(r["shares"].values()) == pytest.approx(1.0, abs=0.02)  # the rest is Python: never negative
        assert r["shares"]["GEMM"] > 0 and r["shares"]["optimizer"] > 0 and r["step_ms"] > 0
        assert r["real_tokens"] < r["padded_tokens"]
        assert r["precision"] == ("fp32" if r["setup"] == "plain" else precision_here())
    assert "profile: share of a training step's wall time" in result.output


def precision_here() -> str:
    from hf_mha.speedups import cpu_bf16_units

    return "bf16 autocast" if cpu_bf16_units() else "fp32"


def test_gpu_check_dry_run_on_cpu():
    """benchmarks/gpu_check.sh --dry-run: every part of the GPU check, on CPU with tiny shapes."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(["bash", str(root / "benchmarks" / "gpu_check.sh"), "--dry-run"], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for text in ("bf16 parity", "ours nested  unpadded vs stock sdpa", "train_step: forward+backward+AdamW",
                 "end to end", "model.attention=stock", "ours / stock:"):
        assert text in result.stdout, text
    assert "FAIL" not in result.stdout


@pytest.mark.parametrize("pad_ratio", [0.0, 0.33, 0.66])
@pytest.mark.parametrize("seq_len", [16, 64, 256])
def test_lengths_give_the_requested_padding(seq_len, pad_ratio):
    rng = random.Random(seq_len)
    for batch_size in (1, 8, 32):
        lengths = lengths_with_padding(batch_size, seq_len, pad_ratio, rng)
        assert len(lengths) == batch_size and max(lengths) == seq_len and min(lengths) >= 1
        if batch_size > 1:
            padding = 1 - sum(lengths) / (batch_size * seq_len)
            assert padding == pytest.approx(pad_ratio, abs=1 / (batch_size * seq_len))  # to the nearest token


def test_without_a_file_lengths_come_from_the_sst2_fit():
    lengths, source = sample_lengths(4000, random.Random(0))
    assert "log-normal" in source
    assert 12 < statistics.fmean(lengths) < 15 and max(lengths) <= 66


@needs_sst2
def test_sst2_file_lengths_match_the_fit():
    lengths, source = sample_lengths(4000, random.Random(0), SST2_TRAIN)
    assert f"{SST2_TRAIN}, column 'sentence' (67,349 texts)" in source
    assert 11 < statistics.fmean(lengths) < 16 and max(lengths) <= 128


def test_text_column_names_the_column(tmp_path):
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"text": "a few words " * n, "label": 0}) + "\n" for n in range(1, 6)))
    lengths, source = sample_lengths(50, random.Random(0), data, text_column="text")
    assert len(lengths) == 50 and min(lengths) >= 5 and "column 'text'" in source


@pytest.mark.parametrize("name, content, column, message", [
    ("missing.tsv", None, "sentence", "--lengths-from: file not found: "),
    ("texts.jsonl", '{"text": "hi"}\n', "sentence", "--text-column: column 'sentence' not in the "),
    ("labels.csv", "sentence,label\n1,0\n", "label", "--text-column: column 'label' of "),
    ("notes.txt", "hello\n", "sentence", "is not a table of texts; give a csv, tsv, json, jsonl or parquet file"),
])
def test_bad_lengths_file_is_one_line_before_any_timing(tmp_path, name, content, column, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    settings = resolve_settings(quick=True, lengths_from=str(path), text_column=column)
    progress = []
    with pytest.raises(UserError) as error:
        run_bench(settings, progress=progress.append)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert progress == []  # nothing was timed


@needs_sst2
def test_bench_with_lengths_from_records_the_file(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "--quick", "--section", "train_step", "--threads", "1",
                                      "--lengths-from", str(SST2_TRAIN), "--json", str(out)])
    assert result.exit_code == 0, result.output
    header = json.loads(out.read_text())["header"]
    assert f"lengths from {SST2_TRAIN}, column 'sentence'" in header["train_step"]
    assert header["settings"]["lengths_from"] == str(SST2_TRAIN)


@pytest.mark.parametrize("option, value, message", [
    ("--size", "huge", "--size: unknown model size 'huge'; choose one of tiny, mini, base, large"),
    ("--backend", "fast", "--backend: unknown attention backend 'fast'"),
    ("--pad", "1.0", "--pad: padding ratios must be in [0, 1)"),
    ("--lengths-from", "/nonexistent/train.tsv", "--lengths-from: file not found: /nonexistent/train.tsv"),
])
def test_bad_option_is_one_line_and_exit_code_2(capsys, option, value, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--quick", option, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
