"""Text reports carry the hand-computed numbers; plots are real PNG files, written atomically."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from hf_mha import reports

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Same example as test_metrics: references 0 0 0 0 1 1 2 2, predictions 0 0 0 1 1 1 1 2.
#   class 0: P 1,   R 3/4, F1 6/7 (.8571), support 4
#   class 1: P 1/2, R 1,   F1 2/3,         support 2
#   class 2: P 1,   R 1/2, F1 2/3,         support 2
#   accuracy 3/4; macro P 5/6 R 3/4 F1 46/63 (.7302); weighted P 7/8 R 3/4 F1 16/21 (.7619)
REFERENCES = [0, 0, 0, 0, 1, 1, 2, 2]
PREDICTIONS = [0, 0, 0, 1, 1, 1, 1, 2]


def _rows(text: str) -> dict[str, list[float]]:
    """Report lines as {row name: numbers}, whatever the column spacing."""
    rows = {}
    for line in text.splitlines():
        words = line.split()
        numbers = []
        while words:
            try:
                numbers.insert(0, float(words[-1]))
            except ValueError:
                break
            words.pop()
        if words and numbers:
            rows[" ".join(words)] = numbers
    return rows


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])  # IHDR: width, height


def _only_file(directory, path):
    assert sorted(directory.iterdir()) == [path], "temporary files left behind"


def test_classification_report_numbers():
    rows = _rows(reports.classification_report_text(REFERENCES, PREDICTIONS, ["neg", "neu", "pos"]))
    assert rows["neg"] == [1.0, 0.75, 0.8571, 4]
    assert rows["neu"] == [0.5, 1.0, 0.6667, 2]
    assert rows["pos"] == [1.0, 0.5, 0.6667, 2]
    assert rows["accuracy"] == [0.75, 8]
    assert rows["macro avg"] == [0.8333, 0.75, 0.7302, 8]
    assert rows["weighted avg"] == [0.875, 0.75, 0.7619, 8]


def test_classification_report_lists_absent_classes():
    # A fourth class never seen: its row shows support 0 and it pulls the macro precision to (1 + .5 + 1 + 0)/4.
    rows = _rows(reports.classification_report_text(REFERENCES, PREDICTIONS, ["neg", "neu", "pos", "other"]))
    assert rows["other"] == [0.0, 0.0, 0.0, 0]
    assert rows["macro avg"][0] == 0.625
    assert rows["accuracy"] == [0.75, 8]


def test_entity_report_numbers():
    # Same two sentences as test_metrics: PER 2/2 right, LOC missed + one spurious, ORG wrong type + wrong boundary.
    references = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-ORG", "I-ORG", "I-ORG", "O", "B-PER"]]
    predictions = [["B-PER", "I-PER", "O", "B-ORG", "O"], ["B-ORG", "I-ORG", "O", "B-LOC", "B-PER"]]
    rows = _rows(reports.entity_report_text(references, predictions))
    assert rows["PER"] == [1.0, 1.0, 1.0, 2]
    assert rows["LOC"] == [0.0, 0.0, 0.0, 1]
    assert rows["ORG"] == [0.0, 0.0, 0.0, 1]
    assert rows["micro avg"] == [0.4, 0.5, 0.4444, 4]  # 2 of 5 predicted, 2 of 4 gold, F1 4/9
    assert rows["macro avg"] == [0.3333, 0.3333, 0.3333, 4]
    assert rows["weighted avg"] == [0.5, 0.5, 0.5, 4]


def test_entity_report_strict_and_empty():
    references, predictions = [["B-PER", "I-PER", "O"]], [["I-PER", "I-PER", "O"]]
    assert _rows(reports.entity_report_text(references, predictions))["PER"] == [1.0, 1.0, 1.0, 1]
    assert _rows(reports.entity_report_text(references, predictions, mode="strict"))["PER"] == [0.0, 0.0, 0.0, 1]
    assert "no entities" in reports.entity_report_text([["O"]], [["O"]])


def test_confusion_matrix_png(tmp_path):
    small = tmp_path / "small" / "confusion.png"  # parent folder does not exist yet
    assert reports.save_confusion_matrix_png(REFERENCES, PREDICTIONS, ["neg", "neu", "pos"], small) == small
    small_size = _png_size(small)
    _only_file(small.parent, small)

    rng = np.random.default_rng(0)
    references = rng.integers(0, 16, 400)
    predictions = np.where(rng.random(400) < 0.7, references, rng.integers(0, 16, 400))
    large = tmp_path / "large.png"
    reports.save_confusion_matrix_png(references, predictions, [f"intent_{i}" for i in range(16)], large)
    width, height = _png_size(large)
    assert width > small_size[0] and height > small_size[1]  # the figure grows with the class count


def test_failed_plot_leaves_nothing(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def broken_savefig(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(PNG_MAGIC)  # half a file, then the crash
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError):
        reports.save_confusion_matrix_png(REFERENCES, PREDICTIONS, ["neg", "neu", "pos"], tmp_path / "cm.png")
    assert list(tmp_path.iterdir()) == []


def test_loss_curve(tmp_path):
    path = tmp_path / "loss.png"
    assert reports.save_loss_curve_png([], path) is False
    # Trainer's final summary has train_loss, not loss: nothing to draw; nan points do not count either.
    assert reports.save_loss_curve_png([{"train_loss": 0.4, "step": 30}, {"loss": math.nan, "step": 5}], path) is False
    assert not path.exists()

    history = [{"loss": 1.0 / step, "learning_rate": 1e-5, "epoch": step / 30, "step": step} for step in range(5, 35, 5)]
    assert reports.save_loss_curve_png(history, path) is True  # no eval points: training curve only
    _png_size(path)

    history += [
        {"eval_loss": 0.5, "eval_f1": 0.7, "eval_runtime": 1.2, "step": 15},
        {"eval_loss": 0.4, "eval_f1": 0.8, "eval_runtime": 1.1, "step": 30},
        {"train_loss": 0.3, "train_runtime": 9.0, "step": 30},
    ]
    with_eval = tmp_path / "with_eval.png"
    assert reports.save_loss_curve_png(history, with_eval, metric="eval_f1") is True
    _png_size(with_eval)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png", "with_eval.png"]


def test_heatmap(tmp_path):
    path = tmp_path / "heads.png"
    importance = np.arange(72, dtype=float).reshape(6, 12) / 71
    reports.save_heatmap_png(importance, path, "Head importance", "head", "layer", colorbar_label="importance")
    _png_size(path)
    _only_file(tmp_path, path)
    with pytest.raises(ValueError, match="2-D"):
        reports.save_heatmap_png(np.zeros((2, 2, 2)), tmp_path / "bad.png", "t", "x", "y")


def test_attention_grid(tmp_path):
    torch = pytest.importorskip("torch")
    tokens = ["[CLS]", "the", "film", "was", "surprisingly", "good", ".", "[SEP]"]
    attn = torch.softmax(torch.randn(6, 12, len(tokens), len(tokens), generator=torch.Generator().manual_seed(0)), dim=-1)
    path = tmp_path / "attention.png"
    reports.save_attention_grid_png(attn, tokens, path, "Attention maps, example 0")
    width, height = _png_size(path)
    assert width > height  # 12 heads across, 6 layers down
    _only_file(tmp_path, path)
    with pytest.raises(ValueError, match="tokens"):
        reports.save_attention_grid_png(attn, tokens[:-1], tmp_path / "bad.png", "t")
    with pytest.raises(ValueError, match="shape"):
        reports.save_attention_grid_png(attn[0], tokens, tmp_path / "bad.png", "t")
