"""The sentence-transformers files of a model folder, carried into every folder obce saves.

A sentence-transformers model is a transformers checkpoint plus the files that tell
``SentenceTransformer`` which modules to build around it: ``modules.json`` (the module list),
``config_sentence_transformers.json``, the Transformer module's ``sentence_bert_config.json``
(``max_seq_length``, lower-casing) and one folder per further module (``1_Pooling/config.json``, a
``Dense`` module's weights; ``Normalize`` has none). Pruning never changes the hidden size, so these
files stay true for a pruned encoder as they are: copied verbatim beside the pruned weights, they
make ``SentenceTransformer(folder)`` rebuild the same modules, once ``import obce_core`` has
registered the ``obce_bert`` model type that sentence-transformers' Transformer module loads
through ``AutoModel``.

Where a model came from is its config's ``_name_or_path``: ``from_pretrained`` sets it,
``load_model`` makes a local one absolute, and ``prune`` keeps it in the pruned config. For a hub
id it is the snapshot folder of the hub cache, where ``load_model`` also fetches the small
sentence-transformers files (:func:`cache_hub_files`) when the hub can be reached.

A classifier (a task model) fine-tuned from a sentence-transformers model carries them too: its
encoder (``AutoModel`` reads a classifier's folder without the head) is then still usable as a
sentence encoder, read the way its source was trained to be read.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path, PurePosixPath

from obce_core.io import read_json

__all__ = [
    "MODULES_FILE",
    "ST_CONFIG_FILE",
    "SentenceTransformersFilesWarning",
    "cache_hub_files",
    "is_sentence_transformers_dir",
    "model_source_dir",
    "sentence_transformers_modules",
    "write_sentence_transformers_files",
]

MODULES_FILE = "modules.json"
ST_CONFIG_FILE = "config_sentence_transformers.json"
# sentence-transformers reads the Transformer module's settings from the first of these it finds.
_TRANSFORMER_CONFIG_GLOB = "sentence_*_config.json"


class SentenceTransformersFilesWarning(UserWarning):
    """A source model's sentence-transformers files could not be carried over; the model itself was saved."""


def model_source_dir(model) -> Path | None:
    """The local folder ``model`` was loaded from (for a hub id: its hub-cache snapshot), or None."""
    name = str(getattr(getattr(model, "config", None), "_name_or_path", "") or "")
    if not name:
        return None
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import try_to_load_from_cache  # only for hub ids; never goes online
        cached = try_to_load_from_cache(name, "config.json")
    except Exception:  # not a valid repo id, or no cache: no source folder
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def is_sentence_transformers_dir(directory: str | os.PathLike | None) -> bool:
    """Whether ``directory`` holds a sentence-transformers model (a ``modules.json``)."""
    return directory is not None and (Path(directory) / MODULES_FILE).is_file()


def _is_transformer(entry: dict) -> bool:
    return str(entry.get("type", "")).rsplit(".", 1)[-1] == "Transformer"


def sentence_transformers_modules(directory: str | os.PathLike) -> list[dict] | None:
    """The module list of ``directory``'s ``modules.json``, checked; None when there is none.

    ValueError (naming the file and the problem) when it is not a list of modules with relative
    paths inside the folder, or its layout is not one obce can carry over: exactly one top-level
    Transformer module (the weights obce saves) and every other module in its own sub-folder.
    """
    path = Path(directory) / MODULES_FILE
    if not path.is_file():
        return None
    try:
        modules = read_json(path, MODULES_FILE)  # depth-limited, like every JSON file a user hands obce
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} could not be read as JSON ({exc}).") from exc
    if not isinstance(modules, list) or not all(isinstance(m, dict) and isinstance(m.get("path"), str)
                                                and isinstance(m.get("type"), str) for m in modules):
        raise ValueError(f"{path} is not a list of modules with a 'type' and a 'path' each.")
    for entry in modules:
        parts = PurePosixPath(entry["path"].replace("\\", "/")).parts
        if entry["path"].startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise ValueError(f"{path}: module path {entry['path']!r} leads outside the model folder.")
    transformers_ = [m for m in modules if _is_transformer(m)]
    if len(transformers_) != 1:
        raise ValueError(f"{path} names {len(transformers_)} Transformer modules at its top level; obce carries "
                         "over models with exactly one (a Router or several encoders are not supported).")
    shared = [m["path"] for m in modules if not _is_transformer(m) and m["path"].strip("/") in ("", ".")]
    if shared:
        raise ValueError(f"{path}: a module other than the Transformer keeps its files in the model folder itself; "
                         "obce carries over modules kept in their own sub-folders only.")
    return modules


def write_sentence_transformers_files(model, target: str | os.PathLike) -> list[str]:
    """Copy the sentence-transformers files of ``model``'s source folder into ``target``.

    ``target`` already holds what ``save_pretrained`` wrote. The Transformer module's settings go
    to ``target`` itself (its module path becomes ``""``: the weights live there), every other
    module's folder is copied under its own relative path, ``max_seq_length`` and the rest as the
    source has them. Returns the paths written, relative to ``target``; nothing for a source that
    is not a sentence-transformers model. A source whose files cannot be carried
    over gets a :class:`SentenceTransformersFilesWarning` and nothing written: the saved model
    still reloads with transformers and ``load_model``.
    """
    source = model_source_dir(model)
    if not is_sentence_transformers_dir(source):
        return []
    try:
        modules = sentence_transformers_modules(source)
    except ValueError as exc:
        warnings.warn(f"The model was saved without its sentence-transformers files: {exc}",
                      SentenceTransformersFilesWarning, stacklevel=2)
        return []
    target = Path(target)
    written = []
    for entry in modules:
        folder = source / entry["path"]
        if _is_transformer(entry):
            for config in sorted(folder.glob(_TRANSFORMER_CONFIG_GLOB)):
                shutil.copyfile(config, target / config.name)
                written.append(config.name)
            entry["path"] = ""
        elif folder.is_dir():
            # copytree follows symlinks by default: hub-cache snapshots are links to blobs
            shutil.copytree(folder, target / entry["path"])
            _match_pooling_width(entry, target / entry["path"], int(model.config.hidden_size))
            written += sorted(p.relative_to(target).as_posix() for p in (target / entry["path"]).rglob("*") if p.is_file())
    if (source / ST_CONFIG_FILE).is_file():
        shutil.copyfile(source / ST_CONFIG_FILE, target / ST_CONFIG_FILE)
        written.append(ST_CONFIG_FILE)
    (target / MODULES_FILE).write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
    written.append(MODULES_FILE)
    return sorted(written)


def _match_pooling_width(entry: dict, folder: Path, width: int) -> None:
    """A Pooling module's ``word_embedding_dimension`` set to the model's width: hidden-dim pruning
    (``obce_core.pruning.hidden``) narrows the token vectors the pooling reads, and a copied 384
    would make ``get_sentence_embedding_dimension()`` report the original width."""
    config = folder / "config.json"
    if not str(entry.get("type", "")).endswith("models.Pooling") or not config.is_file():
        return
    data = read_json(config)
    if isinstance(data, dict) and data.get("word_embedding_dimension") not in (None, width):
        data["word_embedding_dimension"] = width
        config.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def cache_hub_files(repo_id: str) -> None:
    """Fetch a hub model's sentence-transformers files into the hub cache, if it has any.

    transformers downloads the config, weights and tokenizer only; this adds ``modules.json``,
    the ST config and the non-Transformer modules' folders (a few kB) beside them, so a model
    loaded by hub id saves as a sentence-transformers model too. Best effort: any failure (no
    network, no such files) leaves the cache as it was.
    """
    try:
        from huggingface_hub import hf_hub_download, snapshot_download  # only for hub ids

        modules_path = Path(hf_hub_download(repo_id, MODULES_FILE))
        modules = sentence_transformers_modules(modules_path.parent) or []
        patterns = [ST_CONFIG_FILE, _TRANSFORMER_CONFIG_GLOB]
        patterns += [f"{m['path'].strip('/')}/*" for m in modules if not _is_transformer(m)]
        patterns += [f"{m['path'].strip('/')}/{_TRANSFORMER_CONFIG_GLOB}" for m in modules if _is_transformer(m)]
        snapshot_download(repo_id, allow_patterns=patterns)
    except Exception:  # offline, no modules.json, an unsupported layout: the model is a plain transformers one
        return
