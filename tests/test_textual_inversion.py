"""Textual inversion from images (PIN): a tiny random CLIP scores prompts against drawn images."""

import json

import numpy as np
import pytest
import torch
from torch.nn.functional import cosine_similarity

from stableprompt.config import TrainConfig
from stableprompt.contexts.image import ImageTaskContext, build_image_context
from stableprompt.errors import UserError
from stableprompt.models.clip import load_clip
from stableprompt.tasks.images import IMAGE_TASK, REWARD_SCALE, split_images
from stableprompt.trainer import Trainer


def build_tiny_clip_tokenizer():
    """A real CLIPTokenizer over single byte-level characters (with and without the end-of-word
    suffix), so any text encodes without a download."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def build_tiny_clip(seed: int = 0):
    """(CLIPModel, CLIPProcessor): 2-layer towers of width 32, 32x32 images, 16-d embeddings."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    tokenizer = build_tiny_clip_tokenizer()
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    config = CLIPConfig(
        text_config=dict(
            **tower,
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,  # pooling reads the first end-of-text token
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(**tower, image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def tiny_clip():
    return build_tiny_clip()


COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (240, 220, 30), (250, 250, 250)]


def draw_images(folder, n: int):
    """n small PNGs: solid colours, then horizontal stripes of two colours."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        pixels = np.zeros((40, 48, 3), dtype=np.uint8)
        pixels[:] = COLOURS[i % len(COLOURS)]
        if i >= len(COLOURS):  # stripes every 4 rows
            pixels[::8] = pixels[1::8] = pixels[2::8] = pixels[3::8] = COLOURS[(i + 2) % 5]
        Image.fromarray(pixels).save(folder / f"image-{i:02d}.png")
    return folder


def make_config(out, data, agent: str = "unused", **kw) -> TrainConfig:
    base = dict(
        algo="sql",
        task=IMAGE_TASK,
        data=str(data),
        target="tiny-clip",
        agent=agent,
        dtype="float32",
        out=str(out),
    )
    return TrainConfig(**{**base, **kw})


def make_ctx(tmp_path, clip, n: int = 4, **kw) -> ImageTaskContext:
    folder = draw_images(tmp_path / "images", n)
    return build_image_context(make_config(tmp_path / "run", folder, **kw), clip=clip)


def hand_similarity(clip, text: str, folder) -> float:
    """Mean cosine of one text with every image of a folder, straight from the CLIP model."""
    from PIL import Image

    model, processor = clip
    images = [Image.open(p).convert("RGB") for p in sorted(folder.glob("*.png"))]
    with torch.no_grad():
        ids = processor.tokenizer([text], return_tensors="pt")
        text_emb = model.get_text_features(**ids).pooler_output
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        image_emb = model.get_image_features(pixel_values=pixels).pooler_output
    return cosine_similarity(text_emb, image_emb).mean().item()


# ------------------------------------------------------------------------------ scoring


@pytest.mark.parametrize("template", [None, "a photo of {prompt}"])
def test_reward_is_the_mean_cosine_similarity(tmp_path, tiny_clip, template):
    ctx = make_ctx(tmp_path, tiny_clip, template=template)
    text = "great movie" if template is None else "a photo of great movie"
    expected = hand_similarity(tiny_clip, text, tmp_path / "images")
    rewards = ctx.rewards(["great movie", "bad"], ctx.splits["train"])
    assert rewards.shape == (2,)
    assert rewards[0].item() == pytest.approx(REWARD_SCALE * expected, abs=1e-4)
    assert ctx.evaluate(["great movie"], "dev").values[0] == pytest.approx(expected, abs=1e-6)
    report = ctx.report("great movie", "test")
    assert report["accuracy"] == pytest.approx(expected, abs=1e-6) and report["n"] == 4
    lo, hi = report["ci95"]
    assert lo <= report["accuracy"] <= hi and report["per_class_recall"] == []


def test_text_is_encoded_once_per_prompt_and_images_once(tmp_path, tiny_clip, monkeypatch):
    model, _ = tiny_clip
    calls = {"text": 0, "image": 0}
    for kind in ("text", "image"):
        original = getattr(model, f"get_{kind}_features")

        def counted(*args, _original=original, _kind=kind, **kwargs):
            calls[_kind] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(model, f"get_{kind}_features", counted)
    ctx = make_ctx(tmp_path, tiny_clip)
    assert calls == {"text": 0, "image": 1}  # one batch of 4 images
    first = ctx.rewards(["great", "bad", "great"], ctx.splits["train"])
    assert calls["text"] == 1 and ctx.scorer.text_encoded == 2  # duplicates encoded once
    second = ctx.rewards(["bad", "great"], ctx.splits["train"])
    assert calls == {"text": 1, "image": 1}  # all cached: no CLIP forward at all
    torch.testing.assert_close(second, first[[1, 0]])
    assert ctx.scorer.calls == 5 * 4  # the budget counts cache hits, like the text scorer


def test_splits(tmp_path, tiny_clip):
    few = make_ctx(tmp_path / "few", tiny_clip, n=4)
    assert [len(few.splits[s]) for s in ("train", "dev", "test")] == [4, 4, 4]
    many = make_ctx(tmp_path / "many", tiny_clip, n=12)
    names = {s: {ex.text for ex in many.splits[s]} for s in ("train", "dev", "test")}
    assert [len(names[s]) for s in ("train", "dev", "test")] == [8, 2, 2]
    assert set().union(*names.values()) == {f"image-{i:02d}.png" for i in range(12)}
    assert split_images(12, seed=0) == split_images(12, seed=0) != split_images(12, seed=1)


# ------------------------------------------------------------------------------ errors


def one_line_error(fn) -> str:
    with pytest.raises(UserError) as err:
        fn()
    assert "\n" not in str(err.value)
    return str(err.value)


def test_bad_image_folders_are_one_line_errors(tmp_path, tiny_clip):
    def build(data, **kw):
        return lambda: build_image_context(make_config(tmp_path, data, **kw), clip=tiny_clip)

    assert "not found" in one_line_error(build(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    assert "no image files" in one_line_error(build(tmp_path / "empty"))
    assert "--data" in one_line_error(lambda: build_image_context(make_config(tmp_path, None)))
    (tmp_path / "empty" / "broken.png").write_bytes(b"not a png")
    assert "broken.png" in one_line_error(build(tmp_path / "empty"))
    folder = draw_images(tmp_path / "images", 2)
    assert "--algo" in one_line_error(build(folder, algo="appo"))
    assert "{prompt}" in one_line_error(build(folder, template="{input} {prompt}"))


def test_load_clip_from_a_directory_and_its_errors(tmp_path, tiny_clip, tiny_model_dir):
    model, processor = tiny_clip
    model.save_pretrained(tmp_path / "clip")
    processor.save_pretrained(tmp_path / "clip")
    loaded, loaded_processor = load_clip(str(tmp_path / "clip"), "float32", device="cpu")
    ids = loaded_processor.tokenizer(["great"], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.get_text_features(**ids).pooler_output,
            model.get_text_features(**ids).pooler_output,
        )
    (tmp_path / "empty").mkdir()
    assert "could not load CLIP" in one_line_error(lambda: load_clip(str(tmp_path / "empty")))
    assert "not CLIP" in one_line_error(lambda: load_clip(tiny_model_dir))
    assert "--target" in one_line_error(lambda: load_clip("smollm2-135m"))


# ------------------------------------------------------------------------------ training


def train(tmp_path, clip, agent: str, algo: str, seed: int) -> tuple[list[dict], dict]:
    folder = draw_images(tmp_path / "images", 4)
    config = make_config(
        tmp_path / "run",
        folder,
        agent=agent,
        algo=algo,
        seed=seed,
        prompt_length=2,
        prompts_per_step=16,
        mlp_hidden=32,
        lr=1e-2,
        steps=60,
        eval_every=60,
        save_every=60,
        pin_top_k=50,
    )
    summary = Trainer(config, build_image_context(config, clip=clip), progress=False).train()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines], summary


@pytest.mark.parametrize("algo", ["sql", "sparse-sql"])
def test_training_raises_the_similarity(tmp_path, tiny_clip, tiny_model_dir, algo):
    metrics, summary = train(tmp_path, tiny_clip, tiny_model_dir, algo, seed=0)
    rewards = [m["reward_mean"] for m in metrics[1:]]
    assert np.mean(rewards[-5:]) > np.mean(rewards[:5]) + 5.0  # +0.05 mean cosine
    assert summary["prompts"][0]["dev"] > metrics[0]["dev_accuracy"]  # beats the step-0 prompt
    # the step-0 evaluation scores the greedy prompt, the step-60 one also up to 3 sampled
    # prompts (fewer when one is the greedy prompt), each on the 4 dev images
    dev_calls = summary["target_calls"] - 60 * 16 * 4 - 4
    assert dev_calls in (8, 12, 16)
    assert summary["test_calls"] == len(summary["prompts"]) * 4
