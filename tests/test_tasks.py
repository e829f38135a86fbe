"""Tests for stableprompt.tasks: loaders on the shared RLPrompt data, registry, metrics, rewards."""

import json
import math
from pathlib import Path

import pytest
import torch

from stableprompt.errors import UserError
from stableprompt.tasks import (
    DEFAULT_TEMPLATE,
    Example,
    accuracy_report,
    get_task,
    list_tasks,
    load_data,
    load_demo,
    load_hf,
    load_kshot_dir,
    load_table,
    load_task_yaml,
    validate_labels,
    wilson_interval,
)
from stableprompt.tasks.rewards import (
    appo_reward,
    gold_gap,
    label_probs,
    rlprompt_reward,
    zscore,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FSC = DATA / "fsc" / "16-shot"


@pytest.fixture
def fsc() -> Path:
    if not FSC.is_dir():
        pytest.skip(f"shared data not found at {FSC}")
    return FSC


def lp(probs) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float64).log()


# ---------------------------------------------------------------------------- data


def test_kshot_sst2(fsc):
    s = load_kshot_dir(fsc / "sst-2" / "16-42")
    assert [len(s[k]) for k in ("train", "dev", "test")] == [32, 32, 1821]
    assert s["train"][0] == Example("... overly melodramatic ...", 0)
    assert sorted({ex.label for ex in s["train"]}) == [0, 1]
    assert sum(ex.label for ex in s["train"]) == 16
    validate_labels(s, 2, required=("train", "dev", "test"))


def test_kshot_agnews_text_column_and_yelp_no_test(fsc):
    s = load_kshot_dir(fsc / "agnews" / "16-42")
    assert len(s["train"]) == 64 and len(s["test"]) == 7600
    assert s["train"][0].text.startswith("Sudan willing to allow")
    y = load_data(str(fsc / "yelp-2" / "16-42"))
    assert (len(y["train"]), len(y["dev"]), y["test"]) == (32, 32, [])


def test_kshot_missing_dir_and_file(tmp_path):
    with pytest.raises(UserError, match="data directory not found"):
        load_kshot_dir(tmp_path / "nope")
    (tmp_path / "train.tsv").write_text("sentence\tlabel\na\t0\n")
    with pytest.raises(UserError, match=r"data file not found: .*dev\.tsv \(pass --data"):
        load_kshot_dir(tmp_path)


def test_wrong_column_lists_available(tmp_path):
    f = tmp_path / "d.tsv"
    f.write_text("review\tstars\ngood\t1\n")
    with pytest.raises(UserError) as e:
        load_table(f)
    assert "text column 'text' not found" in str(e.value)
    assert "available columns: review, stars" in str(e.value)
    assert "\n" not in str(e.value)
    assert load_table(f, "review", "stars") == [Example("good", 1)]


def test_bad_label(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("text,label\nfine,1\nmeh,positive\n")
    with pytest.raises(UserError, match=r"label 'positive' at .*row 2 is not an integer"):
        load_table(f)
    got = load_table(f, label_map={"1": 1, "positive": 1})
    assert [ex.label for ex in got] == [1, 1]


def test_csv_jsonl_and_quotes(tmp_path):
    c = tmp_path / "d.csv"
    c.write_text('text,label\n"hello, world",1\nbye,0\n')
    assert load_table(c) == [Example("hello, world", 1), Example("bye", 0)]
    t = tmp_path / "d.tsv"
    t.write_text('sentence\tlabel\n"quoted" start\t0\n')  # LM-BFF TSVs are unquoted
    assert load_table(t)[0].text == '"quoted" start'
    j = tmp_path / "d.jsonl"
    j.write_text('{"q": "2+2", "a": ["4", "four"]}\n\n{"q": "1+1", "a": "2"}\n')
    got = load_table(j, text_column="q", label_column=None, target_column="a")
    assert got == [Example("2+2", -1, ("4", "four")), Example("1+1", -1, "2")]
    x = tmp_path / "x.txt"
    x.write_text("a")
    with pytest.raises(UserError, match="unsupported data file type '.txt'"):
        load_table(x)
    c.write_text("text,label\nonly-text\n")
    with pytest.raises(UserError, match="row 1 of .* does not have 2 fields"):
        load_table(c)


def test_load_data_file_is_test_split(tmp_path):
    rows = [{"text": f"t{i}", "label": i % 2} for i in range(6)]
    f = tmp_path / "eval.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = load_data(str(f))
    assert (s["train"], s["dev"], len(s["test"])) == ([], [], 6)
    s = load_data(str(f), train=str(f), dev=str(f))
    assert len(s["train"]) == len(s["dev"]) == 6
    with pytest.raises(UserError, match="data not found"):
        load_data(str(tmp_path / "missing.csv"))
    with pytest.raises(UserError, match="neither train.tsv"):
        load_data(str(tmp_path))


def _save_hf(tmp_path: Path, with_validation: bool) -> Path:
    datasets = pytest.importorskip("datasets")
    train = datasets.Dataset.from_dict(
        {"sentence": [f"s{i}" for i in range(40)], "label": [i % 2 for i in range(40)]}
    )
    parts = {"train": train}
    if with_validation:
        parts["validation"] = datasets.Dataset.from_dict(
            {"sentence": [f"v{i}" for i in range(10)], "label": [i % 2 for i in range(10)]}
        )
    out = tmp_path / "hf"
    datasets.DatasetDict(parts).save_to_disk(str(out))
    return out


def test_load_from_disk_kshot(tmp_path):
    path = _save_hf(tmp_path, with_validation=False)
    s = load_data(str(path), k=4, seed=1)
    assert len(s["train"]) == len(s["dev"]) == 8 and s["test"] == []
    assert sum(ex.label for ex in s["train"]) == 4  # balanced
    assert not {ex.text for ex in s["train"]} & {ex.text for ex in s["dev"]}  # disjoint
    assert load_hf(str(path), k=4, seed=1) == s  # deterministic by seed
    assert load_hf(str(path), k=4, seed=2)["train"] != s["train"]
    full = load_hf(str(path))
    assert (len(full["train"]), len(full["dev"])) == (36, 4)
    with pytest.raises(UserError, match="class 0 has only 20 examples"):
        load_hf(str(path), k=15)


def test_load_from_disk_validation_becomes_test(tmp_path):
    path = _save_hf(tmp_path, with_validation=True)
    s = load_hf(str(path), k=4, seed=0)
    assert len(s["test"]) == 10 and s["test"][0] == Example("v0", 0)
    assert len(s["train"]) == len(s["dev"]) == 8
    with pytest.raises(UserError, match="available columns: sentence, label"):
        load_hf(str(path), label_column="stars")


def test_demo():
    s = load_demo()
    assert [len(s[k]) for k in ("train", "dev", "test")] == [32, 32, 32]
    for split in s.values():
        assert sum(ex.label for ex in split) == len(split) // 2
    texts = [ex.text for split in s.values() for ex in split]
    assert len(set(texts)) == 96
    assert load_data(None) == s


def test_validate_labels():
    s = {"train": [Example("a", 0), Example("b", 2)], "dev": [], "test": []}
    with pytest.raises(UserError, match=r"label 2 of train example 2 is outside 0\.\.1"):
        validate_labels(s, 2)
    validate_labels(s, 3)
    with pytest.raises(UserError, match="the dev split is empty"):
        validate_labels(s, 3, required=("train", "dev"))


# ---------------------------------------------------------------------------- registry


def test_registry():
    assert list_tasks("classification") == [
        "sst-2",
        "sst-5",
        "mr",
        "cr",
        "yelp-2",
        "yelp-5",
        "agnews",
        "subj",
        "trec",
        "yahoo",
        "dbpedia",
        "demo",
    ]
    assert get_task("sst-2").label_words == (" terrible", " great")
    assert get_task("yelp-5").label_words == (" terrible", " bad", " okay", " good", " great")
    assert get_task("agnews").label_words == (" World", " Sports", " Business", " Tech")
    assert get_task("trec").num_classes == 6
    assert get_task("yahoo").num_classes == 10 and get_task("dbpedia").num_classes == 14
    assert get_task("dbpedia").label_words[-1] == " Written"
    assert get_task("demo").label_words == get_task("sst-2").label_words
    for name in list_tasks("classification"):
        t = get_task(name)
        assert t.template.index("{input}") < t.template.index("{prompt}")
        assert all(w.startswith(" ") for w in t.label_words) and t.manual_prompt
    assert get_task("sst-2").template == DEFAULT_TEMPLATE
    assert get_task("sst-2").render("It was", "a {braced} film") == "a {braced} film It was"
    with pytest.raises(UserError, match="unknown task 'sst2'.*sst-2"):
        get_task("sst2")


def test_task_yaml(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text(
        "name: toxic\nlabel_words: [clean, toxic]\n"
        "template: '{input} {prompt}'\nmanual_prompt: This is\n"
    )
    t = load_task_yaml(f)
    assert t.label_words == (" clean", " toxic") and t.manual_prompt == "This is"
    f.write_text("name: x\nlabel_words: [a, b]\ntemplate: '{input}'\nmanual_prompt: p\n")
    with pytest.raises(UserError, match=r"must contain both \{prompt\} and \{input\}"):
        load_task_yaml(f)
    f.write_text("name: x\nlabel_words: [a]\ntemplate: '{input} {prompt}'\n")
    with pytest.raises(UserError, match="at least 2 strings"):
        load_task_yaml(f)
    f.write_text("name: x\n")
    with pytest.raises(UserError, match="missing label_words, template"):
        load_task_yaml(f)
    f.write_text("name: [x\n")
    with pytest.raises(UserError, match="invalid YAML"):
        load_task_yaml(f)
    with pytest.raises(UserError, match="task file not found"):
        load_task_yaml(tmp_path / "none.yaml")


# ---------------------------------------------------------------------------- metrics


def test_wilson_hand_value():
    # 8/10: p=.8, z=1.96: centre=(.8+.19207)/1.38415=.71674, half=.22658 -> (.49016, .94332)
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.49016, abs=1e-4) and hi == pytest.approx(0.94332, abs=1e-4)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0


def test_accuracy_report():
    r = accuracy_report([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], num_classes=3)
    assert r["accuracy"] == pytest.approx(0.6) and r["n"] == 5 and r["correct"] == 3
    assert r["per_class_recall"] == [0.5, pytest.approx(2 / 3), None]
    assert r["ci95"] == pytest.approx(wilson_interval(3, 5))
    with pytest.raises(UserError, match="no examples"):
        accuracy_report([], [], 2)


# ---------------------------------------------------------------------------- rewards


def test_label_probs_renormalises():
    p = label_probs(lp([[0.14, 0.06]]))  # raw LM probs; 0.7/0.3 over the label words
    assert p.tolist()[0] == pytest.approx([0.7, 0.3])


def test_rlprompt_reward_hand_values():
    logp = lp([[[0.7, 0.3]]])
    assert rlprompt_reward(logp, torch.tensor([0])).item() == pytest.approx(80.0)
    assert rlprompt_reward(logp, torch.tensor([1])).item() == pytest.approx(-72.0)
    # 3 classes, 2 prompts, 2 examples: gaps .5-.3=.2 (->40) and .2-.5=-.3 (->-54): mean -7
    logp = lp([[[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]], [[1 / 3] * 3, [1 / 3] * 3]])
    r = rlprompt_reward(logp, torch.tensor([0, 2]))
    assert r.tolist() == pytest.approx([-7.0, 0.0], abs=1e-4)


def test_gold_gap_hand_values_and_sign():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.5, 0.3]])
    assert gold_gap(probs, torch.tensor([0, 2])).tolist() == pytest.approx([0.2, -0.2])
    # on log-probs (check_power's margins): > 0 exactly where the gold word is the argmax
    logp = torch.randn(50, 4).log_softmax(-1)
    labels = torch.randint(0, 4, (50,))
    assert torch.equal(gold_gap(logp, labels) > 0, logp.argmax(-1) == labels)


def test_zscore():
    z = zscore(torch.tensor([1.0, 2.0, 3.0, 10.0]))
    assert z.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert z.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-6)
    assert zscore(torch.tensor([5.0])).tolist() == [0.0]


def test_appo_reward_hand_value():
    # accuracy 1/2 -> 5.0; D = mean(.4, -.6) = -.1 -> 0.1 * -.1 = -.01; R = 4.99
    r = appo_reward(lp([[[0.7, 0.3], [0.2, 0.8]]]), torch.tensor([0, 0]))
    assert r.item() == pytest.approx(4.99)
    assert not math.isnan(r.item())


def test_nan_logprobs_raise():
    logp = lp([[[0.7, 0.3], [0.5, 0.5]]])
    logp[0, 1, 0] = float("nan")
    for fn in (rlprompt_reward, appo_reward):
        with pytest.raises(UserError, match="NaN log-probabilities for 1 rows.*float32"):
            fn(logp, torch.tensor([0, 1]))


def test_non_utf8_table_is_a_clear_error(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\ncaf\xe9 cr\xe8me,1\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        load_table(path)
