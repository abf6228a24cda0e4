"""Fisher importance (Kwon et al. 2022): ``fisher_information``, ``add_fisher``, the ``fisher`` scorer
and its use by sweeps.

Oracle: a hand-written forward of the tiny BERT classifier (attention, FFN, LayerNorms, pooler and
head spelled out with torch functions, checked against the model's own logits) that multiplies
the unit outputs by explicit mask tensors, run ONE example at a time (no padding, no batching);
Fisher is the sum over examples of the squared autograd gradients of the loss w.r.t. the masks.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from conftest import GLUE_DIR, make_tiny_bert, needs_glue
from obce_core import PruningPlan, glue, load_model, score_model, select_units
from obce_core.evidence import encode_split, evaluate_plan, sweep_cache_path, sweep_task_model, task_scores, threshold_sweep
from obce_core.pruning import FISHER_COLUMN, add_fisher, fisher_fingerprint, fisher_information
from obce_core.pruning import fisher as fisher_module

SST2 = [("a gripping, beautifully acted film .", 1), ("the plot is a mess and the jokes fall flat", 0),
        ("i laughed , i cried", 1), ("dull", 0), ("an honest , warm and very funny story about two brothers", 1)]
STSB = [(("A man is playing a guitar.", "A man plays the guitar."), 4.8),
        (("A cat sleeps.", "The stock market fell sharply today."), 0.2),
        (("Two dogs run in a field.", "Dogs are running outside."), 3.5)]


def _oracle_fisher(model, tokenizer, examples, *, regression: bool, mask_key: bool = False) -> list[dict]:
    """Per layer {"ffn", "v", "qk"}: sum over examples of squared d loss / d mask, one example at a time.

    ``mask_key``: the query/key mask on the key output instead of the query output (the same term
    q_i k_i of the logit, so the same gradient).
    """
    bert = model.bert
    layers = bert.encoder.layer
    heads = model.config.num_attention_heads
    sums = None
    for text, label in examples:
        enc = tokenizer(*((text,) if isinstance(text, str) else text), return_tensors="pt")
        masks = []
        for layer in layers:
            att = layer.attention.self
            masks.append({"ffn": torch.ones(layer.intermediate.dense.out_features, requires_grad=True),
                          "v": torch.ones(att.value.out_features, requires_grad=True),
                          "qk": torch.ones(att.query.out_features, requires_grad=True)})
        h = bert.embeddings(input_ids=enc["input_ids"], token_type_ids=enc["token_type_ids"])
        for layer, m in zip(layers, masks):
            att = layer.attention.self
            q, k, v = att.query(h), att.key(h), att.value(h) * m["v"]
            if mask_key:
                k = k * m["qk"]
            else:
                q = q * m["qk"]

            def split(x):  # (1, T, heads * d) -> (1, heads, T, d)
                return x.view(1, x.shape[1], heads, -1).transpose(1, 2)

            qh, kh, vh = split(q), split(k), split(v)
            probs = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(qh.shape[-1]), dim=-1)
            context = (probs @ vh).transpose(1, 2).reshape(1, h.shape[1], -1)
            a = F.layer_norm(layer.attention.output.dense(context) + h, (h.shape[-1],),
                             layer.attention.output.LayerNorm.weight, layer.attention.output.LayerNorm.bias,
                             layer.attention.output.LayerNorm.eps)
            inner = F.gelu(layer.intermediate.dense(a)) * m["ffn"]
            h = F.layer_norm(layer.output.dense(inner) + a, (h.shape[-1],), layer.output.LayerNorm.weight,
                             layer.output.LayerNorm.bias, layer.output.LayerNorm.eps)
        logits = model.classifier(torch.tanh(bert.pooler.dense(h[:, 0])))
        with torch.no_grad():  # the oracle's forward is the model's forward
            torch.testing.assert_close(logits, model(**enc).logits, atol=1e-5, rtol=1e-5)
        if regression:
            loss = (logits.view(-1)[0] - float(label)) ** 2
        else:
            loss = -torch.log_softmax(logits, dim=-1)[0, int(label)]
        flat = [t for m in masks for t in m.values()]
        grads = torch.autograd.grad(loss, flat)
        squares = [{g: grads[3 * i + j].pow(2).double().numpy() for j, g in enumerate(("ffn", "v", "qk"))}
                   for i in range(len(layers))]
        sums = squares if sums is None else [{g: s[g] + q[g] for g in s} for s, q in zip(sums, squares)]
    return sums


def _values(table: pd.DataFrame, layer: int, component: str) -> np.ndarray:
    part = table[(table["layer"] == layer) & (table["component"] == component)].sort_values("neuron")
    assert part["neuron"].tolist() == list(range(len(part)))
    return part[FISHER_COLUMN].to_numpy()


def _check_against_oracle(table, oracle) -> None:
    for i, groups in enumerate(oracle):
        for group, components in (("ffn", ("intermediate",)), ("v", ("value",)), ("qk", ("query", "key"))):
            assert groups[group].max() > 0  # a non-trivial comparison
            for component in components:
                np.testing.assert_allclose(_values(table, i, component), groups[group], rtol=2e-4, atol=1e-9)


def test_fisher_equals_a_hand_written_per_example_computation(tokenizer, tmp_path, one_torch_thread):
    model = make_tiny_bert(seed=4, classifier=True)
    texts, labels = zip(*SST2)
    # Batches of 2 with padding: each example must still contribute its own squared gradient.
    table = fisher_information(model, tokenizer, "sst2", texts_and_labels=(list(texts), list(labels)), batch_size=2,
                               cache_dir=tmp_path)
    oracle = _oracle_fisher(model, tokenizer, SST2, regression=False)
    _check_against_oracle(table, oracle)
    # The query/key pair's value: a mask on the key dim scales the same logit term, so the same value.
    on_key = _oracle_fisher(model, tokenizer, SST2, regression=False, mask_key=True)
    for a, b in zip(oracle, on_key):
        np.testing.assert_allclose(a["qk"], b["qk"], rtol=1e-4, atol=1e-12)
    # The square of a batch's summed gradient would be a different (wrong) number.
    assert table.attrs["n_examples"] == 5 and table.attrs["task"] == "sst2"
    # The model is left as it was: eval mode kept, no hooks, no gradients on its parameters.
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())


def test_fisher_of_a_regression_head(tokenizer, tmp_path, one_torch_thread):
    model = make_tiny_bert(seed=5, classifier=True, num_labels=1)
    texts, labels = zip(*STSB)
    table = fisher_information(model, tokenizer, "stsb", texts_and_labels=(list(texts), list(labels)), batch_size=3,
                               cache_dir=tmp_path)
    _check_against_oracle(table, _oracle_fisher(model, tokenizer, STSB, regression=True))


def test_cache_hit_returns_the_same_table(tokenizer, tmp_path, monkeypatch, one_torch_thread):
    model = make_tiny_bert(seed=4, classifier=True)
    examples = ([t for t, _ in SST2], [y for _, y in SST2])
    first = fisher_information(model, tokenizer, "sst2", texts_and_labels=examples, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.parquet"))) == 1

    def no_compute(*args, **kwargs):
        raise AssertionError("recomputed although the table was cached")

    monkeypatch.setattr(fisher_module, "_squared_gradient_sums", no_compute)
    seen = []
    again = fisher_information(model, tokenizer, "sst2", texts_and_labels=examples, cache_dir=tmp_path,
                               progress=lambda done, total: seen.append((done, total)))
    pd.testing.assert_frame_equal(again.reset_index(drop=True), first.reset_index(drop=True))
    assert again.attrs == first.attrs and seen == [(5, 5)]
    # Other labels are another computation, not a cache hit.
    with pytest.raises(AssertionError, match="recomputed"):
        fisher_information(model, tokenizer, "sst2", texts_and_labels=(examples[0], [1 - y for y in examples[1]]),
                           cache_dir=tmp_path)


def test_bad_inputs_fail_first(tokenizer, tmp_path, one_torch_thread):
    encoder = make_tiny_bert(seed=4)  # no head
    with pytest.raises(ValueError, match="sequence classifier"):
        fisher_information(encoder, tokenizer, "sst2", texts_and_labels=(["a"], [0]), cache_dir=tmp_path)
    model = make_tiny_bert(seed=4, classifier=True)
    with pytest.raises(ValueError, match="integers in 0..1"):
        fisher_information(model, tokenizer, "sst2", texts_and_labels=(["a", "b"], [0, 2]), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="equal, non-zero length"):
        fisher_information(model, tokenizer, "sst2", texts_and_labels=(["a", "b"], [0]), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="'n' parameter of fisher_information"):
        fisher_information(model, tokenizer, "sst2", n=0, cache_dir=tmp_path)


@pytest.fixture
def scored(tokenizer, tmp_path, sentences, one_torch_thread):
    model = make_tiny_bert(seed=4, classifier=True)
    scores = score_model(model, tokenizer, sentences, max_length=32)
    table = fisher_information(model, tokenizer, "sst2", texts_and_labels=([t for t, _ in SST2], [y for _, y in SST2]),
                               cache_dir=tmp_path)
    return model, scores, table


def test_add_fisher_puts_the_column_in_and_refuses_bad_tables(scored):
    model, scores, table = scored
    with_fisher = add_fisher(scores, table)
    assert FISHER_COLUMN not in scores.table.columns  # a new object; the input is unchanged
    merged = with_fisher.table
    for (layer, component), part in merged.groupby(["layer", "component"]):
        values = part.sort_values("neuron")[FISHER_COLUMN].to_numpy()
        if component in ("attention_output", "output"):
            assert np.isnan(values).all()
        else:
            np.testing.assert_array_equal(values, _values(table, layer, component))
    assert fisher_fingerprint(scores) is None and fisher_fingerprint(with_fisher) is not None

    wrong = table.copy()
    wrong.attrs = {**table.attrs, "model_fingerprint": "0123456789abcdef"}
    with pytest.raises(ValueError, match="fingerprint 0123456789abcdef.*Compute Fisher on the model"):
        add_fisher(scores, wrong)
    with pytest.raises(ValueError, match=r"no value for 3 prunable unit\(s\)"):
        add_fisher(scores, table.drop(index=table.index[table["component"] == "value"][:3]))
    nan = table.copy()
    nan.loc[nan.index[7], FISHER_COLUMN] = np.nan
    with pytest.raises(ValueError, match="finite, non-negative Fisher values"):
        add_fisher(scores, nan)
    with pytest.raises(ValueError, match="one row per"):
        add_fisher(scores, pd.concat([table, table.iloc[:1]]))
    with pytest.raises(ValueError, match="without \\['fisher'\\]"):
        add_fisher(scores, table.drop(columns=[FISHER_COLUMN]))


def test_the_fisher_scorer_removes_the_lowest_fisher_units(scored):
    model, scores, table = scored
    # Distinct random values, so "the lowest" is one set; the pair value sits on query and key.
    rng = np.random.default_rng(0)
    table = table.copy()
    pair = table["component"].isin(["query", "key"])
    values = rng.random(len(table))
    key_rows = table["component"] == "key"
    values[key_rows.to_numpy()] = values[(table["component"] == "query").to_numpy()]
    table[FISHER_COLUMN] = values
    with_fisher = add_fisher(scores, table)
    plan = PruningPlan(ffn=40, v=30, qk=50, scorer="fisher", compensation="none")
    selection = select_units(with_fisher, plan, model)
    heads = model.config.num_attention_heads
    for layer in range(2):
        for group, component in (("ffn", "intermediate"), ("v", "value"), ("qk", "query")):
            vals = _values(table, layer, component)
            removed = selection.removed(layer, group)
            assert len(removed) > 0
            if group == "ffn":
                assert set(removed) == set(np.argsort(vals)[: len(removed)])
            else:  # every head loses its own lowest units
                size = len(vals) // heads
                for h in range(heads):
                    mine = [u - h * size for u in removed if h * size <= u < (h + 1) * size]
                    assert set(mine) == set(np.argsort(vals[h * size:(h + 1) * size])[: len(mine)])
    assert pair.any()
    with pytest.raises(ValueError, match="no 'fisher' column.*fisher_information"):
        select_units(scores, plan, model)


@needs_glue
def test_fisher_examples_come_from_the_training_split(tokenizer, tmp_path, monkeypatch, one_torch_thread):
    model = make_tiny_bert(seed=4, classifier=True)
    splits = []
    real = glue.load_task

    def recording(task, split, *args, **kwargs):
        splits.append(split)
        return real(task, split, *args, **kwargs)

    monkeypatch.setattr(glue, "load_task", recording)
    table = fisher_information(model, tokenizer, "sst2", glue_dir=GLUE_DIR, n=6, seed=3, cache_dir=tmp_path)
    scores = task_scores(model, tokenizer, "sst2", scorers=["rf", "fisher"], glue_dir=GLUE_DIR, score_texts=6,
                         score_seed=3, fisher_examples=6, max_length=32)
    assert splits and set(splits) == {"train"}  # never the dev split, which reports the scores
    assert "6 sst2 train examples (seed 3)" in table.attrs["examples"]
    # The same numbers as the same training rows passed by hand.
    monkeypatch.setattr(glue, "load_task", real)
    rows = real("sst2", "train", GLUE_DIR, n=6, seed=3)
    by_hand = fisher_information(model, tokenizer, "sst2", texts_and_labels=(list(rows["sentence"]), list(rows["label"])),
                                 use_cache=False)
    np.testing.assert_allclose(table[FISHER_COLUMN], by_hand[FISHER_COLUMN], rtol=1e-6)
    np.testing.assert_allclose(add_fisher(scores, by_hand).table[FISHER_COLUMN], scores.table[FISHER_COLUMN], rtol=1e-6)
    # Without "fisher", no gradients and no column.
    plain = task_scores(model, tokenizer, "sst2", scorers=["rf"], glue_dir=GLUE_DIR, score_texts=6, score_seed=3,
                        max_length=32)
    assert FISHER_COLUMN not in plain.table.columns


@needs_glue
def test_sweeps_refuse_fisher_without_the_column_before_any_work(tokenizer, tmp_path, sentences, one_torch_thread):
    model = make_tiny_bert(seed=4, classifier=True)
    scores = score_model(model, tokenizer, sentences, max_length=32)
    # glue_dir does not exist: the fisher refusal must come first, before any data is read.
    with pytest.raises(ValueError, match="no 'fisher' column.*task_scores"):
        threshold_sweep(model, tokenizer, scores, "sst2", scorers=("rf", "fisher"), glue_dir=tmp_path / "none",
                        cache_dir=tmp_path)
    assert not list(tmp_path.glob("*.jsonl"))
    encoder = make_tiny_bert(seed=4)
    with pytest.raises(ValueError, match="sequence classifier"):
        task_scores(encoder, tokenizer, "sst2", scorers=["fisher"], glue_dir=tmp_path / "none")


@needs_glue
def test_sweep_task_model_with_fisher_and_the_cli(tokenizer, tmp_path, monkeypatch, capsys, one_torch_thread):
    from obce_core.cli import main
    from obce_core.training import PhaseEvent
    from test_app_evidence import _save_task_model

    path = _save_task_model(tmp_path / "tiny-sst2", tokenizer)
    events = []
    kwargs = dict(glue_dir=GLUE_DIR, groups=["ffn"], percentiles=[0, 50], eval_size=24, score_texts=12,
                  max_length=32, compensation="none", cache_dir=tmp_path / "sweeps")
    swept = sweep_task_model(str(path), "sst2", scorers=["rf", "fisher"], fisher_examples=10, progress=events.append,
                             **kwargs)
    phases = [e.phase for e in events if isinstance(e, PhaseEvent)]
    assert any(p.startswith("Fisher importance on 10 labelled sst2 training examples") for p in phases)
    assert swept.table[["scorer", "percentile"]].values.tolist() == [["rf", 0.0], ["fisher", 0.0], ["rf", 50.0],
                                                                     ["fisher", 50.0]]
    # Oracle: the same plan, evaluated here on scores + Fisher built by hand from the training split.
    model, tok = load_model(str(path), device="cpu")
    texts = glue.dataset_texts(glue.load_task("sst2", "train", GLUE_DIR, n=12, seed=0), "sst2")
    scores = add_fisher(score_model(model, tok, texts, max_length=32),
                        fisher_information(model, tok, "sst2", glue_dir=GLUE_DIR, n=10, use_cache=False, max_length=32))
    encoded = encode_split(tok, "sst2", glue_dir=GLUE_DIR, eval_size=24, max_length=32)
    expected = evaluate_plan(model, scores, PruningPlan(ffn=50, scorer="fisher", compensation="none"), encoded)
    got = swept.table[(swept.table["scorer"] == "fisher") & (swept.table["percentile"] == 50)].iloc[0]
    assert got["main_score"] == pytest.approx(expected["main_score"]) and got["params_total"] == expected["params_total"]
    # The fisher column is part of the rows' cache key; scores without it keep their old key.
    plain_path = sweep_cache_path(model, score_model(model, tok, texts, max_length=32), encoded, compensation="none")
    assert sweep_cache_path(model, scores, encoded, compensation="none") != plain_path
    assert swept.path.name == sweep_cache_path(model, scores, encoded, compensation="none").name

    monkeypatch.setenv("OBCE_CACHE_DIR", str(tmp_path / "cli-cache"))
    code = main(["sweep", "--model", str(path), "--task", "sst2", "--glue-dir", str(GLUE_DIR), "--groups", "ffn",
                 "--percentiles", "0,50", "--scorers", "rf,fisher", "--eval-size", "24", "--score-texts", "12",
                 "--fisher-examples", "10", "--compensation", "none"])
    out = capsys.readouterr()
    assert code == 0 and "fisher" in out.out and "Fisher importance on 10 labelled" in out.err


@pytest.fixture
def workspace(glue_workspace):
    return glue_workspace


@needs_glue
def test_the_prune_page_ranks_by_fisher_for_a_task_model_and_says_why_not_otherwise(tokenizer, workspace):
    from conftest import save_tiny_bert
    from test_app_background import settle
    from test_app_evidence import PRUNE_PAGE, _save_task_model, _scored_app

    source = _save_task_model(workspace / "task_models" / "tiny-sst2", tokenizer)
    at = _scored_app(source)
    at.switch_page(PRUNE_PAGE).run()
    at.selectbox(key="_w_scorer").set_value("fisher").run()
    settle(at)  # Fisher's first computation runs in the background, below free sliders
    run = at.session_state["scored"]
    # Oracle: Fisher over the page's 512 labelled sst2 TRAINING examples (seed 0), computed here.
    model, tok = load_model(str(source), device="cpu")
    table = fisher_information(model, tok, "sst2", glue_dir=GLUE_DIR, n=512, seed=0, use_cache=False)
    np.testing.assert_allclose(run.scores.table[FISHER_COLUMN], add_fisher(run.scores, table).table[FISHER_COLUMN],
                               rtol=1e-6)
    assert any(m.label.startswith("Encoder parameters after") for m in at.metric)

    encoder = save_tiny_bert(workspace / "encoders" / "tiny", tokenizer, seed=1)
    at = _scored_app(encoder)
    at.switch_page(PRUNE_PAGE).run()
    assert not at.exception
    # a model without a task head is not offered Fisher (it needs the task's labels)
    assert "fisher" not in at.selectbox(key="_w_scorer").options
