"""Tests for obce_core.glue: real GLUE files, synthetic files for the missing tasks, metrics."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from obce_core import glue
from obce_core.glue import (
    TASKS,
    GlueDataError,
    available_local_tasks,
    compute_metrics,
    dataset_texts,
    default_glue_dir,
    get_task,
    glue_average,
    load_task,
    main_score,
)

GLUE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "glue"
needs_data = pytest.mark.skipif(
    not GLUE_DIR.is_dir(), reason=f"real GLUE files not found at {GLUE_DIR}"
)

# Row counts and per-label counts from /work/shared/data/glue/README.md (label ids as on the hub).
REAL = {
    ("cola", "train"): (8551, {1: 6023, 0: 2528}),
    ("cola", "validation"): (1043, {1: 721, 0: 322}),
    ("sst2", "train"): (67349, {1: 37569, 0: 29780}),
    ("sst2", "validation"): (872, {1: 444, 0: 428}),
    ("mrpc", "train"): (3668, {1: 2474, 0: 1194}),
    ("mrpc", "validation"): (408, {1: 279, 0: 129}),
    # rte: entailment is id 0
    ("rte", "train"): (2490, {0: 1249, 1: 1241}),
    ("rte", "validation"): (277, {0: 146, 1: 131}),
    ("wnli", "train"): (635, {1: 312, 0: 323}),
    ("wnli", "validation"): (71, {0: 40, 1: 31}),
}


@pytest.fixture(autouse=True)
def _no_ambient_glue_dir(monkeypatch):
    # The machine running the tests may set OBCE_GLUE_DIR; every test states its own source.
    monkeypatch.delenv("OBCE_GLUE_DIR", raising=False)


_CACHE: dict = {}


def _real(task: str, split: str):
    if (task, split) not in _CACHE:
        _CACHE[task, split] = load_task(task, split, GLUE_DIR)
    return _CACHE[task, split]


def _raw_rows(path: Path) -> list[list[str]]:
    """Independent oracle: split the raw text on newlines and tabs, no csv module."""
    text = path.read_bytes().decode("utf-8")
    text = text.removeprefix("\ufeff")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.split("\t") for line in lines]


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def test_registry_matches_hub_names():
    assert list(TASKS) == ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
    assert TASKS["qqp"].text_columns == ("question1", "question2")
    assert TASKS["mnli"].text_columns == ("premise", "hypothesis")
    assert TASKS["qnli"].text_columns == ("question", "sentence")
    assert TASKS["wnli"].label_names == ("not_entailment", "entailment")
    assert TASKS["rte"].label_names == ("entailment", "not_entailment")
    assert TASKS["mnli"].label_names == ("entailment", "neutral", "contradiction")
    assert TASKS["stsb"].num_labels == 1 and TASKS["stsb"].is_regression
    assert TASKS["mnli"].splits == ("train", "validation_matched", "validation_mismatched")
    assert TASKS["mnli"].split_file("validation_mismatched") == "dev_mismatched.tsv"
    assert TASKS["sst2"].dir_name == "SST-2" and TASKS["stsb"].dir_name == "STS-B"


@pytest.mark.parametrize(
    "alias, name",
    [("SST-2", "sst2"), ("sst-2", "sst2"), ("STS-B", "stsb"), ("sts_b", "stsb"), ("CoLA", "cola")],
)
def test_get_task_aliases(alias, name):
    assert get_task(alias) is TASKS[name]


def test_get_task_unknown_lists_valid_names():
    with pytest.raises(ValueError, match="Unknown GLUE task 'imdb'") as info:
        get_task("imdb")
    assert "sst2" in str(info.value) and "wnli" in str(info.value)


def test_task_validates_itself():
    with pytest.raises(ValueError, match="num_labels"):
        glue.GlueTask(
            name="x", dir_name="X", text_columns=("s",), label_names=("a", "b"), num_labels=3,
            is_regression=False, metrics=("accuracy",), main_metric="accuracy",
            splits=("train",), split_files=("train.tsv",), tsv_text_columns=("s",),
            tsv_label_column="label",
        )


# ---------------------------------------------------------------------------------------------
# Real files
# ---------------------------------------------------------------------------------------------


@needs_data
@pytest.mark.parametrize("task, split", list(REAL))
def test_real_file_counts_and_labels(task, split):
    rows, per_label = REAL[task, split]
    ds = _real(task, split)
    spec = TASKS[task]
    assert len(ds) == rows
    assert Counter(ds["label"]) == per_label
    assert ds.column_names == [*spec.text_columns, "label", "idx"]
    assert ds.features["label"].names == list(spec.label_names)
    assert list(ds["idx"]) == list(range(rows))
    if split == "train":  # the registry's official size, used for estimates before loading
        assert spec.train_rows == rows


@needs_data
@pytest.mark.parametrize("task, split", list(REAL))
def test_real_file_first_and_last_rows_match_raw_text(task, split):
    spec = TASKS[task]
    raw = _raw_rows(GLUE_DIR / spec.dir_name / spec.split_file(split))
    if spec.tsv_columns is None:
        header, body = raw[0], raw[1:]
    else:
        header, body = list(spec.tsv_columns), raw
    assert len(body) == REAL[task, split][0]
    ds = _real(task, split)
    for i in (0, len(body) - 1):
        fields = dict(zip(header, body[i]))
        for col, file_col in zip(spec.text_columns, spec.tsv_text_columns):
            assert ds[i][col] == fields[file_col]
        raw_label = fields[spec.tsv_label_column]
        expected = (
            spec.label_names.index(raw_label)
            if raw_label in spec.label_names
            else int(raw_label)
        )
        assert ds[i]["label"] == expected


@needs_data
def test_real_label_counts_match_raw_text():
    # Counted from the raw text, so the README numbers above are not the only oracle.
    for task, split in [("rte", "train"), ("wnli", "validation"), ("cola", "validation")]:
        spec = TASKS[task]
        raw = _raw_rows(GLUE_DIR / spec.dir_name / spec.split_file(split))
        header = list(spec.tsv_columns) if spec.tsv_columns else raw.pop(0)
        col = header.index(spec.tsv_label_column)
        raw_counts = Counter(r[col] for r in raw)
        ids = Counter(_real(task, split)["label"])
        by_name = {
            (spec.label_names[i] if task == "rte" else str(i)): c for i, c in ids.items()
        }
        assert by_name == raw_counts


@needs_data
def test_sst2_keeps_trailing_space():
    assert _real("sst2", "train")[0]["sentence"] == "hide new secretions from the parental units "


@needs_data
def test_unbalanced_quote_kept_verbatim():
    spec = TASKS["rte"]
    raw = _raw_rows(GLUE_DIR / "RTE" / "train.tsv")
    header, body = raw[0], raw[1:]
    pos = header.index("sentence1")
    hits = [i for i, r in enumerate(body) if r[pos].count('"') % 2 == 1]
    assert hits, "expected at least one RTE train sentence1 with an odd number of quotes"
    ds = _real("rte", "train")
    for i in hits[:5]:
        assert ds[i]["sentence1"] == body[i][pos]
        assert ds[i][spec.text_columns[1]] == body[i][header.index("sentence2")]


@needs_data
def test_mrpc_columns_and_texts_have_no_bom():
    ds = _real("mrpc", "train")
    assert ds.column_names == ["sentence1", "sentence2", "label", "idx"]
    assert "\ufeff" not in ds[0]["sentence1"]
    # The raw file does start with one: the reader must be what removes it.
    assert (GLUE_DIR / "MRPC" / "train.tsv").read_bytes().startswith(b"\xef\xbb\xbf")


@needs_data
def test_available_local_tasks_and_env_dir(monkeypatch):
    assert available_local_tasks(GLUE_DIR) == ["cola", "sst2", "mrpc", "rte", "wnli"]
    assert default_glue_dir() is None and available_local_tasks() == []
    monkeypatch.setenv("OBCE_GLUE_DIR", str(GLUE_DIR))
    assert default_glue_dir() == GLUE_DIR
    assert len(load_task("wnli", "validation")) == 71  # found through the env var


@needs_data
def test_dataset_texts_single_and_pair():
    cola = _real("cola", "validation")
    texts = dataset_texts(cola, "cola")
    assert texts[0] == "The sailors rode the breeze clear of the rocks." and len(texts) == 1043
    pairs = dataset_texts(_real("wnli", "validation"), "wnli")
    assert pairs[1] == (
        "Jane knocked on Susan's door but she did not answer.",
        "Susan did not answer.",
    )
    with pytest.raises(ValueError, match="sentence1"):
        dataset_texts(cola, "rte")


@needs_data
def test_subsample_is_seeded():
    a = load_task("rte", "validation", GLUE_DIR, n=20, seed=1)
    b = load_task("rte", "validation", GLUE_DIR, n=20, seed=1)
    c = load_task("rte", "validation", GLUE_DIR, n=20, seed=2)
    assert len(a) == 20 and len(set(a["idx"])) == 20
    assert list(a["idx"]) == list(b["idx"])
    assert list(a["idx"]) != list(c["idx"])
    expected = np.random.default_rng(1).choice(277, size=20, replace=False).tolist()
    assert list(a["idx"]) == expected
    full = _real("rte", "validation")
    assert a[3]["sentence1"] == full[expected[3]]["sentence1"]
    assert len(load_task("rte", "validation", GLUE_DIR, n=10_000)) == 277
    with pytest.raises(ValueError, match="integer >= 1"):
        load_task("rte", "validation", GLUE_DIR, n=0)


# ---------------------------------------------------------------------------------------------
# Synthetic files for the tasks not shipped here
# ---------------------------------------------------------------------------------------------


def _write(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")


def test_synthetic_stsb(tmp_path):
    header = "index genre filename year old_index source1 source2 sentence1 sentence2 score".split()
    _write(tmp_path / "STS-B" / "dev.tsv", [
        header,
        ["0", "main-captions", "MSRvid", "2012test", "0", "none", "none",
         'A man says "hi.', "A man greets.", "4.750"],
        ["1", "main-news", "x", "2012", "1", "none", "none", "a", "b", "0.000"],
    ])
    ds = load_task("STS-B", "validation", tmp_path)
    assert ds.column_names == ["sentence1", "sentence2", "label", "idx"]
    assert ds.features["label"].dtype == "float32"
    assert ds["label"][0] == pytest.approx(4.75) and ds["label"][1] == 0.0
    assert ds[0]["sentence1"] == 'A man says "hi.'


def test_synthetic_qnli_qqp(tmp_path):
    _write(tmp_path / "QNLI" / "dev.tsv", [
        ["index", "question", "sentence", "label"],
        ["0", "Who?", "Him.", "entailment"],
        ["1", "Where?", "Nowhere.", "not_entailment"],
    ])
    _write(tmp_path / "QQP" / "train.tsv", [
        ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
        ["0", "1", "2", "How old?", "What age?", "1"],
        ["1", "3", "4", "Why?", "When?", "0"],
    ])
    qnli = load_task("qnli", "validation", tmp_path)
    assert qnli.column_names == ["question", "sentence", "label", "idx"]
    assert list(qnli["label"]) == [0, 1]
    qqp = load_task("qqp", "train", tmp_path)
    assert qqp.column_names == ["question1", "question2", "label", "idx"]
    assert list(qqp["label"]) == [1, 0] and qqp[1]["question2"] == "When?"
    assert available_local_tasks(tmp_path) == ["qqp", "qnli"]


def test_synthetic_mnli_matched_and_mismatched(tmp_path):
    header = [
        "index", "promptID", "pairID", "genre", "sentence1", "sentence2", "label1", "gold_label"
    ]
    _write(tmp_path / "MNLI" / "dev_matched.tsv", [
        header,
        ["0", "1", "1e", "fiction", "P0", "H0", "neutral", "neutral"],
        ["1", "2", "2e", "fiction", "P1", "H1", "contradiction", "contradiction"],
        ["2", "3", "3e", "fiction", "P2", "H2", "entailment", "entailment"],
    ])
    _write(tmp_path / "MNLI" / "dev_mismatched.tsv", [
        header, ["0", "9", "9e", "letters", "Q0", "G0", "entailment", "contradiction"],
    ])
    m = load_task("mnli", "validation_matched", tmp_path)
    assert m.column_names == ["premise", "hypothesis", "label", "idx"]
    assert list(m["label"]) == [1, 2, 0] and m[2]["premise"] == "P2"
    mm = load_task("mnli", "validation_mismatched", tmp_path)
    assert list(mm["label"]) == [2] and mm[0]["hypothesis"] == "G0"
    with pytest.raises(GlueDataError, match="train.tsv"):
        load_task("mnli", "train", tmp_path)


# ---------------------------------------------------------------------------------------------
# Bad data and missing sources
# ---------------------------------------------------------------------------------------------


def test_unknown_split_lists_valid_ones(tmp_path):
    with pytest.raises(GlueDataError, match="'validation_matched'"):
        load_task("mnli", "validation", tmp_path)
    with pytest.raises(GlueDataError, match="'train'.*'validation'"):
        load_task("rte", "test", tmp_path)


def test_unknown_task():
    with pytest.raises(ValueError, match="Unknown GLUE task"):
        load_task("squad", "train")


def test_missing_task_dir_and_split_file(tmp_path):
    with pytest.raises(GlueDataError, match=r"RTE") as info:
        load_task("rte", "train", tmp_path)
    assert str(tmp_path / "RTE") in str(info.value)
    _write(tmp_path / "RTE" / "train.tsv", [["index", "sentence1", "sentence2", "label"]])
    with pytest.raises(GlueDataError) as info:
        load_task("rte", "validation", tmp_path)
    assert str(tmp_path / "RTE" / "dev.tsv") in str(info.value)
    assert len(load_task("rte", "train", tmp_path)) == 0  # header only is an empty split


def test_wrong_field_count_names_file_and_line(tmp_path):
    _write(tmp_path / "RTE" / "dev.tsv", [
        ["index", "sentence1", "sentence2", "label"],
        ["0", "a", "b", "entailment"],
        ["1", "a", "", "b", "entailment"],  # the RTE defect the README describes
    ])
    with pytest.raises(GlueDataError) as info:
        load_task("rte", "validation", tmp_path)
    msg = str(info.value)
    assert "dev.tsv, line 3" in msg and "found 5" in msg and "expected 4" in msg


def test_label_outside_set(tmp_path):
    _write(tmp_path / "WNLI" / "dev.tsv", [
        ["index", "sentence1", "sentence2", "label"], ["0", "a", "b", "2"],
    ])
    with pytest.raises(GlueDataError) as info:
        load_task("wnli", "validation", tmp_path)
    msg = str(info.value)
    assert "line 2" in msg and "'2'" in msg and "entailment" in msg and "dev.tsv" in msg
    _write(tmp_path / "CoLA" / "train.tsv", [["gj04", "yes", "", "A sentence."]])
    with pytest.raises(GlueDataError, match=r"train.tsv, line 1: label 'yes'"):
        load_task("cola", "train", tmp_path)
    _write(tmp_path / "STS-B" / "train.tsv", [["sentence1", "sentence2", "score"], ["a", "b", "7"]])
    with pytest.raises(GlueDataError, match="between 0 and 5"):
        load_task("stsb", "train", tmp_path)


def test_offline_without_local_copy(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GlueDataError) as info:
        load_task("sst2", "validation")
    msg = str(info.value)
    assert "OBCE_GLUE_DIR" in msg and "glue_dir" in msg and "hub" in msg and "'sst2'" in msg
    assert isinstance(info.value, ValueError)


def test_hub_failure_is_wrapped(monkeypatch):
    import datasets

    def boom(*args, **kwargs):
        raise ConnectionError("no route to huggingface.co")

    import obce_core.glue.data as glue_data

    monkeypatch.setattr(glue_data, "hub_offline", lambda: False)
    monkeypatch.setattr(datasets, "load_dataset", boom)
    with pytest.raises(GlueDataError, match="no route") as info:
        load_task("cola", "train")
    assert "OBCE_GLUE_DIR" in str(info.value) and isinstance(info.value.__cause__, ConnectionError)


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def test_accuracy_hand_computed():
    m = compute_metrics("sst2", [1, 0, 1, 1], [1, 0, 0, 1])
    assert m == {"accuracy": 0.75}
    assert isinstance(m["accuracy"], float)


def test_mcc_by_formula():
    refs = [1, 1, 1, 0, 0, 0, 1, 0]
    preds = [1, 1, 0, 0, 0, 1, 1, 0]
    tp, tn, fp, fn = 3, 3, 1, 1
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    got = compute_metrics("cola", preds, refs)
    assert list(got) == ["matthews_correlation"]
    assert got["matthews_correlation"] == pytest.approx(mcc) == pytest.approx(0.5)
    assert got["matthews_correlation"] == pytest.approx(matthews_corrcoef(refs, preds))


def test_mrpc_accuracy_f1():
    refs = [1, 1, 1, 0, 0]
    preds = [1, 0, 1, 1, 0]
    got = compute_metrics("mrpc", preds, refs)
    # tp=2, fp=1, fn=1 -> precision = recall = 2/3 -> f1 = 2/3; accuracy 3/5
    assert got["f1"] == pytest.approx(2 / 3) == pytest.approx(f1_score(refs, preds))
    assert got["accuracy"] == pytest.approx(0.6) == pytest.approx(accuracy_score(refs, preds))
    assert main_score("mrpc", got) == pytest.approx((2 / 3 + 0.6) / 2)


def test_stsb_correlations():
    refs = [0.0, 1.0, 2.5, 4.0, 5.0]
    preds = np.array([[0.5], [0.7], [2.0], [4.5], [4.0]])  # (n, 1) regression head output
    got = compute_metrics("stsb", preds, refs)
    assert got["pearson"] == pytest.approx(pearsonr(preds[:, 0], refs)[0])
    assert got["spearmanr"] == pytest.approx(spearmanr(preds[:, 0], refs)[0])
    # ranks of preds: 1,2,3,5,4 vs 1..5 -> d^2 sum = 2 -> rho = 1 - 6*2/(5*24) = 0.9
    assert got["spearmanr"] == pytest.approx(0.9)
    assert main_score("stsb", got) == pytest.approx((got["pearson"] + 0.9) / 2)


def test_logits_argmax():
    logits = np.array([[2.0, 0.1, -1.0], [0.0, 0.0, 3.0], [0.2, 0.9, 0.1]])
    assert compute_metrics("mnli", logits, [0, 2, 0]) == {"accuracy": pytest.approx(2 / 3)}
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        compute_metrics("rte", logits, [0, 1, 0])


def test_metrics_bad_inputs():
    with pytest.raises(ValueError, match="same length"):
        compute_metrics("rte", [0, 1], [0])
    with pytest.raises(ValueError, match="no examples"):
        compute_metrics("rte", [], [])
    with pytest.raises(ValueError, match=r"ids in 0\.\.1"):
        compute_metrics("rte", [0, 1], [0, -1])
    with pytest.raises(ValueError, match="whole numbers"):
        compute_metrics("rte", [0.5, 1.0], [0, 1])
    with pytest.raises(ValueError, match="lack"):
        main_score("mrpc", {"accuracy": 0.5})


def test_glue_average_hand_computed():
    results = {
        "cola": {"matthews_correlation": 0.5},
        "MRPC": {"accuracy": 0.8, "f1": 0.9},
        "sst-2": {"accuracy": 0.7},
        "stsb": {"pearson": 0.6, "spearmanr": 0.4},
    }
    # main scores 0.5, 0.85, 0.7, 0.5 -> mean 2.55 / 4
    assert glue_average(results) == pytest.approx(0.6375)
    with pytest.raises(ValueError, match="twice"):
        glue_average({"sst2": {"accuracy": 1.0}, "SST-2": {"accuracy": 0.0}})
    with pytest.raises(ValueError, match="empty"):
        glue_average({})
