"""GGUF files into ordinary checkpoints: the header read without weights, and the one-time dequantisation.

transformers refuses to ``save_pretrained`` a GGUF-loaded model, so its state dict is copied into a
model built from its config and that is saved (safetensors + tokenizer), atomically.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

from alignx.artefacts import Artefact, atomic_dir, write_marker
from alignx.model.model_catalogue import BaseModelError
from alignx.progress import Progress

RECORD_FILE = "base_model.json"  # what was converted from what, beside the weights


def read_gguf_header(path: Path) -> dict[str, Any]:
    """Architecture, block count and chat-template flag from a GGUF file, checking it is complete.

    Reads the metadata only (no weights). Raises ``BaseModelError`` naming the file when it is not
    GGUF, truncated or corrupt, or lacks the keys a model needs.
    """
    try:
        from alignx.model.gguf_header import GGUFFormatError, read_header
    except ImportError:
        raise BaseModelError(f"reading {path} needs the gguf package: pip install -e '.[models]'") from None
    path = Path(path)
    try:
        header = read_header(path)
    except GGUFFormatError as exc:
        raise BaseModelError(f"{path} is not a readable GGUF file (truncated or corrupt?): {exc}") from None
    size = path.stat().st_size
    if header["data_end"] > size:
        raise BaseModelError(f"{path} is truncated: its tensors end at byte {header['data_end']:,} "
                             f"but the file has {size:,}")
    meta = header["metadata"]
    arch = meta.get("general.architecture")
    if not isinstance(arch, str) or not isinstance(meta.get(f"{arch}.block_count"), int):
        raise BaseModelError(f"{path} has no general.architecture / <arch>.block_count metadata")
    return {"architecture": arch, "num_layers": meta[f"{arch}.block_count"], "tensors": len(header["tensors"]),
            "gguf_chat_template": "tokenizer.chat_template" in meta}


def supported_gguf_architectures() -> list[str]:
    """GGUF architectures transformers can dequantise into a model."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return sorted(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer"))


def load_gguf(gguf: Path) -> tuple[Any, Any]:
    """Tokenizer and float32 model dequantised from a GGUF file (the slow part: about a minute here)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except ImportError as exc:
        raise BaseModelError(f"{gguf}: transformers cannot load it ({exc}); pip install -e '.[models]'") from exc
    except Exception as exc:
        raise BaseModelError(f"{gguf}: transformers cannot read this GGUF file (truncated or corrupt?): "
                             f"{type(exc).__name__}: {exc}") from exc
    return tokenizer, model


def plain_copy(loaded: Any, dtype: str, state: dict[str, Any] | None = None) -> Any:
    """The same weights in a model built from the config, without the GGUF quantizer (so it saves).

    ``state``: the weights to put in, when ``loaded``'s own are not plain tensors (a sharded model's,
    gathered); default ``loaded.state_dict()``.
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):  # else from_pretrained of the copy would take it for GGUF
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.load_state_dict(loaded.state_dict() if state is None else state)  # strict: every tensor has its place
    model.generation_config = copy.deepcopy(loaded.generation_config)
    return model


def convert_gguf(gguf: Path, out: Path, dtype: str, meta: dict[str, Any], progress: Progress | None = None) -> Artefact:
    """Dequantise a GGUF model and save it as a safetensors checkpoint + tokenizer, atomically."""
    header = read_gguf_header(gguf)
    supported = supported_gguf_architectures()
    if header["architecture"] not in supported:
        raise BaseModelError(f"{gguf}: architecture {header['architecture']!r} is not supported for GGUF "
                             f"conversion; supported: {', '.join(supported)}")
    _report(progress, 0, 3, f"loading {gguf.name}")
    start = time.perf_counter()
    tokenizer, loaded = load_gguf(gguf)
    _report(progress, 1, 3, "copying weights")
    model = plain_copy(loaded, dtype)
    del loaded
    _report(progress, 2, 3, "saving")
    record = {**meta, "gguf_file": str(gguf), "dtype": dtype, **header, "model_type": model.config.model_type,
              "convert_seconds": round(time.perf_counter() - start, 1)}
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
    _report(progress, 3, 3, "done")
    return write_marker(out, "model", record)


def _report(progress: Progress | None, done: int, total: int, desc: str) -> None:
    if progress is not None:
        progress(done, total, desc)
