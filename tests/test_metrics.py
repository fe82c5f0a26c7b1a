"""Offline metric modules: values checked against hand computations written out in the comments."""

from __future__ import annotations

import math
import socket
import sys
import textwrap
import time

import evaluate
import pytest

from hf_mha.errors import UserError
from hf_mha.metrics import (
    BUILTIN_METRICS,
    classification_metrics,
    default_metric_names,
    load_metric,
)
from hf_mha.metrics.squad import answer_exact, answer_f1, normalize_answer, squad_v1_scores, squad_v2_scores


def compute(name, **kwargs):
    return load_metric(name, keep_in_memory=True).compute(**kwargs)


# Three classes, eight examples.
#   index       0  1  2  3  4  5  6  7
#   reference   0  0  0  0  1  1  2  2
#   prediction  0  0  0  1  1  1  1  2
# correct: 0,1,2,4,5,7 -> accuracy 6/8 = 3/4
# class 0: predicted at 0,1,2 (all right)      P = 3/3 = 1,   R = 3/4,  F1 = 2*1*(3/4)/(7/4) = 6/7
# class 1: predicted at 3,4,5,6 (4,5 right)    P = 2/4 = 1/2, R = 2/2 = 1, F1 = 2*(1/2)/(3/2) = 2/3
# class 2: predicted at 7 (right)              P = 1,         R = 1/2,  F1 = 2/3
# macro:    P = (1 + 1/2 + 1)/3 = 5/6   R = (3/4 + 1 + 1/2)/3 = 3/4   F1 = (6/7 + 2/3 + 2/3)/3 = 46/63
# micro:    P = R = F1 = accuracy = 3/4
# weighted (supports 4, 2, 2 of 8):
#           P = (4*1 + 2*1/2 + 2*1)/8 = 7/8   R = (4*3/4 + 2*1 + 2*1/2)/8 = 3/4   F1 = (4*6/7 + 2*2/3 + 2*2/3)/8 = 16/21
MULTI_REFS = [0, 0, 0, 0, 1, 1, 2, 2]
MULTI_PREDS = [0, 0, 0, 1, 1, 1, 1, 2]

# Binary, eight examples.
#   reference   1  1  1  0  0  0  1  0
#   prediction  1  0  1  1  0  1  1  0
# TP = 3 (0,2,6)  FN = 1 (1)  FP = 2 (3,5)  TN = 2 (4,7); accuracy 5/8
# positive 1: P = 3/5, R = 3/4, F1 = 2*(3/5)(3/4)/(3/5 + 3/4) = (9/10)/(27/20) = 2/3
# positive 0: P = 2/3 (predicted 0 at 1,4,7; right at 4,7), R = 2/4, F1 = 2*(2/3)(1/2)/(7/6) = 4/7
# MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (6 - 2)/sqrt(5*4*4*3) = 4/sqrt(240) = 1/sqrt(15)
BIN_REFS = [1, 1, 1, 0, 0, 0, 1, 0]
BIN_PREDS = [1, 0, 1, 1, 0, 1, 1, 0]


def test_accuracy():
    assert compute("accuracy", predictions=MULTI_PREDS, references=MULTI_REFS) == {"accuracy": 0.75}
    assert compute("accuracy", predictions=MULTI_PREDS, references=MULTI_REFS, normalize=False) == {"accuracy": 6.0}


@pytest.mark.parametrize(
    "average, expected",
    [
        ("macro", {"precision": 5 / 6, "recall": 3 / 4, "f1": 46 / 63}),
        ("micro", {"precision": 3 / 4, "recall": 3 / 4, "f1": 3 / 4}),
        ("weighted", {"precision": 7 / 8, "recall": 3 / 4, "f1": 16 / 21}),
    ],
)
def test_precision_recall_f1_averages(average, expected):
    for name, value in expected.items():
        result = compute(name, predictions=MULTI_PREDS, references=MULTI_REFS, average=average)
        assert result[name] == pytest.approx(value), name


def test_per_class_and_label_subset():
    per_class = compute("f1", predictions=MULTI_PREDS, references=MULTI_REFS, average=None)["f1"]
    assert per_class == pytest.approx([6 / 7, 2 / 3, 2 / 3])
    # Macro over classes 0 and 1 only: (6/7 + 2/3)/2 = (18/21 + 14/21)/2 = 16/21.
    subset = compute("f1", predictions=MULTI_PREDS, references=MULTI_REFS, average="macro", labels=[0, 1])["f1"]
    assert subset == pytest.approx(16 / 21)


def test_binary_and_pos_label():
    assert compute("precision", predictions=BIN_PREDS, references=BIN_REFS)["precision"] == pytest.approx(3 / 5)
    assert compute("recall", predictions=BIN_PREDS, references=BIN_REFS)["recall"] == pytest.approx(3 / 4)
    assert compute("f1", predictions=BIN_PREDS, references=BIN_REFS)["f1"] == pytest.approx(2 / 3)
    assert compute("f1", predictions=BIN_PREDS, references=BIN_REFS, pos_label=0)["f1"] == pytest.approx(4 / 7)
    assert compute("recall", predictions=BIN_PREDS, references=BIN_REFS, pos_label=0)["recall"] == pytest.approx(1 / 2)


def test_matthews_correlation():
    result = compute("mcc", predictions=BIN_PREDS, references=BIN_REFS)
    assert result["matthews_correlation"] == pytest.approx(1 / math.sqrt(15))


def test_multilabel_config():
    # Two examples, two labels: the first matches exactly, the second does not -> subset accuracy 1/2.
    # Label 1 (second column): predicted in both, gold in the first only -> P = 1/2, R = 1, F1 = 2/3;
    # label 0: predicted in the second, gold in the second -> F1 = 1; macro F1 = (1 + 2/3)/2 = 5/6.
    predictions, references = [[0, 1], [1, 1]], [[0, 1], [1, 0]]
    accuracy = load_metric("accuracy", config_name="multilabel", keep_in_memory=True)
    assert accuracy.compute(predictions=predictions, references=references) == {"accuracy": 0.5}
    f1 = load_metric("f1", config_name="multilabel", keep_in_memory=True)
    assert f1.compute(predictions=predictions, references=references, average="macro")["f1"] == pytest.approx(5 / 6)


def test_pearson_and_spearman():
    # x = 1,2,3,4 and y = 1,3,2,4: deviations from 2.5 are (-1.5,-.5,.5,1.5) and (-1.5,.5,-.5,1.5);
    # sum of products 2.25 - .25 - .25 + 2.25 = 4, sums of squares 5 and 5 -> r = 4/5. Ranks equal values: rho = 4/5.
    assert compute("pearson", predictions=[1, 3, 2, 4], references=[1, 2, 3, 4])["pearsonr"] == pytest.approx(0.8)
    assert compute("spearman", predictions=[1, 3, 2, 4], references=[1, 2, 3, 4])["spearmanr"] == pytest.approx(0.8)
    # y = 1,3,2,40: mean 11.5, deviations (-10.5,-8.5,-9.5,28.5); products with x's deviations sum to
    # 15.75 + 4.25 - 4.75 + 42.75 = 58, squares sum to 1085 -> r = 58/sqrt(5*1085). Ranks are still 1,3,2,4 -> rho = 0.8.
    assert compute("pearsonr", predictions=[1, 3, 2, 40], references=[1, 2, 3, 4])["pearsonr"] == pytest.approx(58 / math.sqrt(5425))
    assert compute("spearmanr", predictions=[1, 3, 2, 40], references=[1, 2, 3, 4])["spearmanr"] == pytest.approx(0.8)
    # Ties: x = 1,2,2,3 ranks to 1,2.5,2.5,4; with y ranks 1,2,3,4 the rank deviations are (-1.5,0,0,1.5) and
    # (-1.5,-.5,.5,1.5): products 4.5, squares 4.5 and 5 -> rho = 4.5/sqrt(22.5) = sqrt(0.9).
    result = compute("spearman", predictions=[1, 2, 2, 3], references=[1, 2, 3, 4], return_pvalue=True)
    assert result["spearmanr"] == pytest.approx(math.sqrt(0.9))
    assert 0 < result["spearmanr_pvalue"] < 1


def test_mse():
    # errors 0.5, 0, 2 -> squares 0.25, 0, 4 -> mean 4.25/3
    assert compute("mse", predictions=[0.5, 2, 3], references=[1, 2, 5])["mse"] == pytest.approx(4.25 / 3)
    assert compute("mse", predictions=[0.5, 2, 3], references=[1, 2, 5], squared=False)["mse"] == pytest.approx(math.sqrt(4.25 / 3))


# Two sentences. Gold entities: PER(s1 0-1), LOC(s1 3), ORG(s2 0-2), PER(s2 4) -> 4.
# Predicted: PER(s1 0-1) right; ORG(s1 3) wrong type; ORG(s2 0-1) wrong boundary; LOC(s2 3) spurious;
# PER(s2 4) right -> 5 predicted, 2 right.
#   PER: P 2/2, R 2/2, F1 1, number 2      LOC: P 0/1, R 0/1, F1 0, number 1     ORG: P 0/2, R 0/1, F1 0, number 1
#   micro: P 2/5, R 2/4, F1 2*(.4)(.5)/(.9) = 4/9
#   macro: P = R = F1 = (1 + 0 + 0)/3 = 1/3
#   weighted (supports 2, 1, 1): P = R = F1 = (2*1)/4 = 1/2
#   tokens: s1 wrong at 3; s2 wrong at 2 and 3 -> 7 of 10 right
NER_REFS = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-ORG", "I-ORG", "I-ORG", "O", "B-PER"]]
NER_PREDS = [["B-PER", "I-PER", "O", "B-ORG", "O"], ["B-ORG", "I-ORG", "O", "B-LOC", "B-PER"]]


def test_seqeval_per_type_and_averages():
    result = compute("seqeval", predictions=NER_PREDS, references=NER_REFS)
    assert result["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "number": 2}
    assert result["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 1}
    assert result["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 1}
    assert result["overall_precision"] == pytest.approx(2 / 5)
    assert result["overall_recall"] == pytest.approx(1 / 2)
    assert result["overall_f1"] == pytest.approx(4 / 9)
    assert result["overall_accuracy"] == pytest.approx(7 / 10)
    for score in ("precision", "recall", "f1"):
        assert result[f"macro_{score}"] == pytest.approx(1 / 3)
        assert result[f"weighted_{score}"] == pytest.approx(1 / 2)


def test_seqeval_strict_mode_and_suffix():
    # "I-PER I-PER" opens a PER entity in lenient (conlleval) reading, but is not a valid IOB2 chunk.
    references, predictions = [["B-PER", "I-PER", "O"]], [["I-PER", "I-PER", "O"]]
    assert compute("seqeval", predictions=predictions, references=references)["overall_f1"] == 1.0
    assert compute("seqeval", predictions=predictions, references=references, mode="strict")["overall_f1"] == 0.0
    assert compute("seqeval", predictions=predictions, references=references, mode="strict", scheme="IOB2")["overall_f1"] == 0.0
    # Without a scheme, strict mode reads it off the gold tags: IOBES here, where S- is a one-token entity.
    iobes = [["S-PER", "O", "B-LOC", "E-LOC"]]
    result = compute("seqeval", predictions=iobes, references=iobes, mode="strict")
    assert result["PER"]["number"] == 1 and result["LOC"]["number"] == 1 and result["overall_f1"] == 1.0
    suffixed = [["PER-B", "PER-I", "O"]]
    result = compute("seqeval", predictions=suffixed, references=suffixed, suffix=True)
    assert result["PER"]["number"] == 1 and result["overall_f1"] == 1.0
    with pytest.raises(ValueError, match="IOB2"):
        compute("seqeval", predictions=predictions, references=references, mode="strict", scheme="IOX")


def test_seqeval_without_entities_is_zero_not_nan():
    result = compute("seqeval", predictions=[["O", "O"]], references=[["O", "O"]])
    assert result["overall_f1"] == 0.0 and result["macro_f1"] == 0.0 and result["overall_accuracy"] == 1.0


def test_normalize_answer():
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    # Articles go only as whole words: "theater" and "another" keep their letters.
    assert normalize_answer("Theater an apple, another A") == "theater apple another"
    assert normalize_answer("  ") == ""


def test_answer_em_and_f1():
    assert answer_exact("the Eiffel Tower.", "Eiffel tower") == 1
    assert answer_exact("Eiffel", "Eiffel tower") == 0
    # "the big red barn" -> big red barn; "a red barn door" -> red barn door: 2 shared of 3 and 3 -> F1 2/3
    assert answer_f1("the big red barn", "a red barn door") == pytest.approx(2 / 3)
    # red red barn vs red barn: shared counts min(2,1) red + 1 barn = 2; P = 2/3, R = 2/2 -> F1 = 4/5
    assert answer_f1("red red barn", "red barn") == pytest.approx(0.8)
    # No answer vs no answer: a match in v2.0, nothing shared in v1.1
    assert answer_f1("", "the") == 1.0
    assert answer_f1("", "the", empty_matches_empty=False) == 0.0


def _squad_reference(qid, *texts):
    return {"id": qid, "answers": {"text": list(texts), "answer_start": [0] * len(texts)}}


def test_squad_v1():
    predictions = [
        {"id": "q1", "prediction_text": "Denver Broncos"},
        {"id": "q2", "prediction_text": "the big red barn"},
        {"id": "q3", "prediction_text": "1990s"},
    ]
    references = [
        _squad_reference("q1", "Denver Broncos", "The Denver Broncos"),
        _squad_reference("q2", "a red barn door", "barn"),
        _squad_reference("q3", "1990"),
    ]
    # q1: EM 1, F1 1.  q2: EM 0, F1 max(2/3, barn: P 1/3 R 1 -> 1/2) = 2/3.  q3: EM 0, F1 0 ("1990s" != "1990").
    # EM = 100 * 1/3; F1 = 100 * (1 + 2/3 + 0)/3 = 500/9
    result = compute("squad", predictions=predictions, references=references)
    assert result["exact_match"] == pytest.approx(100 / 3)
    assert result["f1"] == pytest.approx(500 / 9)
    perfect = compute("squad", predictions=[{"id": "q1", "prediction_text": "The Denver Broncos"}], references=references[:1])
    assert perfect == {"exact_match": 100.0, "f1": 100.0}


def test_squad_v1_missing_prediction_scores_zero():
    result = squad_v1_scores({"a": "Paris"}, {"a": ["Paris"], "b": ["Rome"]})
    assert result == {"exact_match": 50.0, "f1": 50.0}


# Four questions; no-answer probabilities are powers of two so the float32 feature stores them exactly.
#   A answerable   gold Paris               pred "Paris"                na .125  raw EM 1  F1 1
#   B answerable   gold "the 19th century"  pred "19th century France"  na .625  raw EM 0  F1: 2 shared of 3 and 2 -> 0.8
#   C unanswerable                          pred ""                     na .875  raw EM 1  F1 1
#   D unanswerable                          pred "London"               na .75   raw EM 0  F1 0
V2_PREDICTIONS = [
    {"id": "A", "prediction_text": "Paris", "no_answer_probability": 0.125},
    {"id": "B", "prediction_text": "19th century France", "no_answer_probability": 0.625},
    {"id": "C", "prediction_text": "", "no_answer_probability": 0.875},
    {"id": "D", "prediction_text": "London", "no_answer_probability": 0.75},
]
V2_REFERENCES = [
    _squad_reference("A", "Paris"),
    _squad_reference("B", "the 19th century"),
    _squad_reference("C"),
    _squad_reference("D"),
]


def test_squad_v2_default_threshold():
    result = compute("squad_v2", predictions=V2_PREDICTIONS, references=V2_REFERENCES)
    # Threshold 1.0 never abstains: exact = (1+0+1+0)/4, f1 = (1+.8+1+0)/4.
    assert result["exact"] == pytest.approx(50.0) and result["f1"] == pytest.approx(70.0) and result["total"] == 4
    assert result["HasAns_exact"] == pytest.approx(50.0) and result["HasAns_f1"] == pytest.approx(90.0)
    assert result["NoAns_exact"] == pytest.approx(50.0) and result["NoAns_f1"] == pytest.approx(50.0)
    assert result["HasAns_total"] == 2 and result["NoAns_total"] == 2
    # Best threshold: start abstaining everywhere (C and D right: 2), answer in order of rising probability:
    #   EM: A +1 -> 3 (best, at .125), B +0 -> 3, D -1 -> 2, C 0 -> 2            best 3/4 at .125
    #   F1: A +1 -> 3 (best, at .125), B +.8 -> 3.8 (best, at .625), D -1, C 0    best 3.8/4 at .625
    assert result["best_exact"] == pytest.approx(75.0) and result["best_exact_thresh"] == 0.125
    assert result["best_f1"] == pytest.approx(95.0) and result["best_f1_thresh"] == 0.625


def test_squad_v2_threshold_abstains():
    # Above 0.5: B, C, D abstain. B is answerable -> 0; C and D are unanswerable -> 1. A keeps its 1.
    result = compute("squad_v2", predictions=V2_PREDICTIONS, references=V2_REFERENCES, no_answer_threshold=0.5)
    assert result["exact"] == pytest.approx(75.0) and result["f1"] == pytest.approx(75.0)
    assert result["HasAns_f1"] == pytest.approx(50.0) and result["NoAns_exact"] == pytest.approx(100.0)
    # Abstaining needs a probability strictly above the threshold: at 0.625 B still answers (F1 .8), C and D abstain.
    result = compute("squad_v2", predictions=V2_PREDICTIONS, references=V2_REFERENCES, no_answer_threshold=0.625)
    assert result["f1"] == pytest.approx(95.0) and result["exact"] == pytest.approx(75.0)


def test_squad_v2_edge_cases():
    only_answerable = squad_v2_scores({"A": "Paris"}, {"A": 0.0}, {"A": ["Paris"]})
    assert "NoAns_total" not in only_answerable and only_answerable["HasAns_exact"] == 100.0
    # Gold answers that normalise to nothing ("The") are dropped; if none is left, "no answer" is the right one.
    assert squad_v2_scores({"A": ""}, {"A": 0.0}, {"A": ["The"]})["exact"] == 100.0
    assert squad_v2_scores({"A": ""}, {"A": 0.0}, {"A": ["The", "Paris"]})["exact"] == 0.0
    with pytest.raises(ValueError, match="no prediction"):
        squad_v2_scores({"A": "x"}, {"A": 0.0}, {"A": ["x"], "B": []})


def test_add_batch_then_compute_uses_every_batch(tmp_path):
    accuracy = load_metric("accuracy", cache_dir=str(tmp_path))
    for start in range(0, 8, 3):
        accuracy.add_batch(predictions=MULTI_PREDS[start:start + 3], references=MULTI_REFS[start:start + 3])
    assert accuracy.compute() == {"accuracy": 0.75}

    seqeval = load_metric("seqeval", keep_in_memory=True)
    for prediction, reference in zip(NER_PREDS, NER_REFS):
        seqeval.add(prediction=prediction, reference=reference)
    assert seqeval.compute()["overall_f1"] == pytest.approx(4 / 9)

    squad = load_metric("squad_v2", keep_in_memory=True)
    squad.add_batch(predictions=V2_PREDICTIONS[:2], references=V2_REFERENCES[:2])
    squad.add_batch(predictions=V2_PREDICTIONS[2:], references=V2_REFERENCES[2:])
    assert squad.compute()["best_f1"] == pytest.approx(95.0)


def test_modules_are_evaluate_metrics_and_check_features():
    for name, cls in BUILTIN_METRICS.items():
        module = cls(keep_in_memory=True)
        assert isinstance(module, evaluate.Metric) and module.name == name
        assert isinstance(module.info, evaluate.MetricInfo) and module.features
    assert load_metric("mcc").name == "matthews_correlation"
    assert load_metric("Pearson").name == "pearsonr"
    with pytest.raises(ValueError):
        compute("accuracy", predictions=["cat", "dog"], references=[0, 1])
    with pytest.raises((ValueError, KeyError)):  # evaluate lets a missing dict key through as KeyError
        compute("squad", predictions=[{"prediction_text": "x"}], references=[_squad_reference("q", "x")])


def test_unknown_metric_is_a_user_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # keep evaluate.load from trying the hub during the test
    with pytest.raises(UserError) as raised:
        load_metric("acuracy")
    message = str(raised.value)
    assert "\n" not in message and "offline" in message and "internet" in message
    assert "did you mean 'accuracy'" in message and "squad_v2" in message and "mcc" in message


def test_fallback_honours_hf_hub_offline(monkeypatch):
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    evaluate_offline = evaluate.config.HF_EVALUATE_OFFLINE
    started = time.monotonic()
    with pytest.raises(UserError):
        load_metric("bleu")
    assert calls == [] and time.monotonic() - started < 1.0
    assert evaluate.config.HF_EVALUATE_OFFLINE == evaluate_offline  # evaluate's own setting is put back


def test_fallback_loads_a_local_metric_script(tmp_path):
    script = tmp_path / "mha_ft_exact_count" / "mha_ft_exact_count.py"
    script.parent.mkdir()
    script.write_text(textwrap.dedent('''
        import datasets
        import evaluate

        class MhaFtExactCount(evaluate.Metric):
            def _info(self):
                return evaluate.MetricInfo(description="", citation="", features=datasets.Features(
                    {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}))

            def _compute(self, predictions, references):
                return {"mha_ft_exact_count": sum(p == r for p, r in zip(predictions, references))}
    '''))
    module = load_metric(str(script.parent), keep_in_memory=True)
    assert module.compute(predictions=[1, 2, 3], references=[1, 0, 3]) == {"mha_ft_exact_count": 2}


def test_classification_metrics_binary():
    names = ["accuracy", "f1", "f1_macro", "precision", "recall", "mcc"]
    result = classification_metrics(names, BIN_PREDS, BIN_REFS, num_labels=2)
    # f1 is binary (positive class 1) for two classes; f1_macro = (2/3 + 4/7)/2 = 13/21
    assert result == pytest.approx(
        {"accuracy": 5 / 8, "f1": 2 / 3, "f1_macro": 13 / 21, "precision": 3 / 5, "recall": 3 / 4, "mcc": 1 / math.sqrt(15)}
    )
    assert list(result) == names and all(type(v) is float for v in result.values())
    assert classification_metrics(["f1"], BIN_PREDS, BIN_REFS)["f1"] == pytest.approx(2 / 3)  # ids 0/1 seen: binary


def test_classification_metrics_multiclass():
    names = ["f1", "f1_micro", "f1_weighted", "precision_macro", "recall_weighted", "matthews_correlation"]
    result = classification_metrics(names, MULTI_PREDS, MULTI_REFS, num_labels=3)
    assert result["f1"] == pytest.approx(46 / 63)  # macro for three classes
    assert result["f1_micro"] == pytest.approx(3 / 4)
    assert result["f1_weighted"] == pytest.approx(16 / 21)
    assert result["precision_macro"] == pytest.approx(5 / 6)
    assert result["recall_weighted"] == pytest.approx(3 / 4)
    assert -1 <= result["matthews_correlation"] <= 1


def test_classification_metrics_multilabel():
    # The multilabel example of test_multilabel_config: subset accuracy 1/2, macro F1 5/6 (also what "f1" means here).
    predictions, references = [[0, 1], [1, 1]], [[0, 1], [1, 0]]
    result = classification_metrics(
        default_metric_names("multi_label_classification") + ["f1"], predictions, references,
        problem_type="multi_label_classification",
    )
    assert result["subset_accuracy"] == 0.5 and result["hamming_loss"] == 0.25
    assert result["f1_samples"] == pytest.approx((1 + 2 / 3) / 2) and result["f1_macro"] == pytest.approx(5 / 6) and result["f1"] == pytest.approx(5 / 6)
    # micro over both labels: TP 2 (ex1 label 1, ex2 label 0), FP 1 (ex2 label 1), FN 0 -> P 2/3, R 1, F1 4/5
    assert result["f1_micro"] == pytest.approx(0.8)
    with pytest.raises(UserError, match="multi-label"):
        classification_metrics(["mcc"], predictions, references, problem_type="multi_label_classification")


def test_classification_metrics_regression():
    # predictions arrive as an [n, 1] logits array from Trainer
    result = classification_metrics(
        default_metric_names("regression"), [[1.0], [3.0], [2.0], [4.0]], [1.0, 2.0, 3.0, 4.0], problem_type="regression"
    )
    # r = rho = 0.8 (see test_pearson_and_spearman); squared errors 0, 1, 1, 0 -> mse 1/2
    assert result == pytest.approx({"pearson": 0.8, "spearman": 0.8, "mse": 0.5})
    with pytest.raises(UserError, match="regression"):
        classification_metrics(["accuracy"], [0.5], [0.5], problem_type="regression")


def test_classification_metrics_rejects_unknown_and_unfit_names(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="f1_macro"):
        classification_metrics(["f1_macr"], BIN_PREDS, BIN_REFS)
    with pytest.raises(UserError, match="cannot score"):
        classification_metrics(["seqeval"], BIN_PREDS, BIN_REFS)


def test_default_metric_names():
    assert default_metric_names("single_label_classification") == ["accuracy", "f1", "mcc"]
    assert default_metric_names("regression") == ["pearson", "spearman", "mse"]
    with pytest.raises(ValueError):
        default_metric_names("token-classification")


@pytest.mark.parametrize("offline_env", [False, True])
def test_building_and_computing_never_touches_the_network(monkeypatch, offline_env):
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise OSError("network disabled in this test")

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if offline_env:
            monkeypatch.setenv(var, "1")
        else:
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    started = time.monotonic()
    for name in BUILTIN_METRICS:
        load_metric(name, experiment_id="offline-check", keep_in_memory=True)
    classification_metrics(["accuracy", "f1", "mcc", "pearson"], [0, 1, 1], [0, 1, 0])
    assert calls == []
    assert time.monotonic() - started < 2.0  # a hub round trip, even a refused one, would show here


def test_metrics_import_does_not_pull_in_matplotlib(monkeypatch):
    # Re-import the package in this process with matplotlib hidden and refused, instead of paying ~8 s for a fresh
    # interpreter; monkeypatch puts the original modules back afterwards.
    import importlib
    import importlib.abc

    import hf_mha

    class RefuseMatplotlib(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "matplotlib":
                raise ImportError(f"{name} imported by hf_mha.metrics")
            return None

    for name in list(sys.modules):
        if name.split(".")[0] == "matplotlib" or name.startswith(("hf_mha.metrics", "hf_mha.reports")):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(hf_mha, "metrics", hf_mha.metrics)
    monkeypatch.setattr(sys, "meta_path", [RefuseMatplotlib(), *sys.meta_path])
    fresh = importlib.import_module("hf_mha.metrics")
    assert fresh.load_metric("accuracy", keep_in_memory=True).compute(predictions=[1], references=[1]) == {"accuracy": 1.0}
    assert not any(name.split(".")[0] == "matplotlib" for name in sys.modules)
