"""The served model's own tokenizer, loaded offline, behind the few calls a workload needs.

vLLM refuses token ids outside the served model's vocabulary (``Token id N is out of vocabulary``,
``vllm/renderers/base.py``) and counts a text or chat prompt with the model's tokenizer and chat
template, so a workload for a real server must be made of that model's tokens, as ``vllm bench
serve`` makes it (``get_tokenizer`` in ``vllm/benchmarks/serve.py``). The tokenizer comes from a
local model folder or the local Hugging Face cache, never from a download: ``transformers``'
``AutoTokenizer`` (``local_files_only=True``) when it is installed, else the ``tokenizers`` library
for a bare ``tokenizer.json``. Both are imported only here and only when a model has a tokenizer, so
``vllm-tune --help`` and the simulator on catalog models never pay for them.

The simulator's word tokenizer (:mod:`.sim_tokenizer`) stands in only where the caller allows it (the
simulated engine) and the model has no tokenizer on this machine.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..errors import InputError
from ..hf_cache import cached_snapshot, hub_cache_dir
from .sim_tokenizer import SimTokenizer

HF_EXTRA_HINT = "pip install 'vllm-slo-guard[hf]'"
# files that make a folder a tokenizer folder for transformers; tokenizer.json alone is enough for `tokenizers`
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")
# what vLLM answers a chat request when the tokenizer has no template (vllm/renderers/hf.py)
NO_CHAT_TEMPLATE = (
    "As of transformers v4.44, default chat template is no longer allowed, so you must provide a chat "
    "template if the tokenizer does not define one."
)


class PromptTokenizer(Protocol):
    """What the workload and the simulated server ask of a tokenizer (Hugging Face's names)."""

    @property
    def name(self) -> str:
        """The model (folder or id) it belongs to, for messages."""
        ...

    @property
    def vocab_size(self) -> int:
        """Random prompts sample ids below this (Hugging Face's ``vocab_size``: without added tokens)."""
        ...

    @property
    def max_token_id(self) -> int:
        """The largest id the tokenizer knows, added tokens included."""
        ...

    @property
    def all_special_ids(self) -> tuple[int, ...]: ...

    @property
    def has_chat_template(self) -> bool: ...

    def num_special_tokens_to_add(self) -> int: ...

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def chat_text(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """The prompt vLLM's chat endpoint makes of ``messages``: the chat template with the generation
        prompt (``vllm/renderers/hf.py``); vLLM then encodes it without special tokens (the template has
        them). InputError (vLLM's HTTP 400) when there is no template or the template refuses them."""
        ...


class _HfTokenizer:
    """A ``transformers`` tokenizer."""

    def __init__(self, name: str, tok: Any) -> None:
        self.name, self._tok = name, tok
        self.vocab_size = int(tok.vocab_size)
        self.max_token_id = max(len(tok) - 1, self.vocab_size - 1)
        added = getattr(tok, "added_tokens_decoder", {})
        special = set(tok.all_special_ids) | {i for i, t in added.items() if getattr(t, "special", False)}
        self.all_special_ids = tuple(sorted(special))
        self.has_chat_template = bool(getattr(tok, "chat_template", None))

    def num_special_tokens_to_add(self) -> int:
        return int(self._tok.num_special_tokens_to_add())

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(ids)))

    def chat_text(self, messages: Sequence[Mapping[str, Any]]) -> str:
        if not self.has_chat_template:
            raise InputError(NO_CHAT_TEMPLATE)
        try:
            text = self._tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # a template refuses input by raising (jinja2's TemplateError and others)
            raise InputError(f"the chat template of {self.name} refused the messages: {exc}") from None
        return str(text)


class _FastTokenizer:
    """A bare ``tokenizer.json`` through the ``tokenizers`` library (no transformers, no chat templates)."""

    def __init__(self, name: str, tok: Any, config: dict[str, Any]) -> None:
        self.name, self._tok = name, tok
        self.vocab_size = int(tok.get_vocab_size(with_added_tokens=False))
        self.max_token_id = max(int(tok.get_vocab_size(with_added_tokens=True)) - 1, self.vocab_size - 1)
        self.all_special_ids = tuple(sorted(i for i, t in tok.get_added_tokens_decoder().items() if t.special))
        self.has_chat_template = bool(config.get("chat_template"))

    def num_special_tokens_to_add(self) -> int:
        return int(self._tok.post_processor.num_special_tokens_to_add(False)) if self._tok.post_processor else 0

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=False))

    def chat_text(self, messages: Sequence[Mapping[str, Any]]) -> str:
        if not self.has_chat_template:
            raise InputError(NO_CHAT_TEMPLATE)
        raise InputError(f"rendering the chat template of {self.name} needs transformers: {HF_EXTRA_HINT}")


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def tokenizer_folder(model: str) -> Path | None:
    """Where ``model``'s tokenizer files are on this machine: its folder or its hub cache snapshot, or None."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path if _has_tokenizer(path) else None
    return cached_snapshot(model, _has_tokenizer)


def _import_transformers() -> Any:
    """``transformers``, quietly: no advisory line ("PyTorch was not found") on our stderr."""
    saved = os.environ.get("TRANSFORMERS_NO_ADVISORY_WARNINGS")
    os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"
    try:
        import transformers
    finally:
        if saved is None:
            os.environ.pop("TRANSFORMERS_NO_ADVISORY_WARNINGS", None)
        else:
            os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = saved
    transformers.utils.logging.set_verbosity_error()
    return transformers


def _load_hf(model: str, folder: Path) -> PromptTokenizer:
    transformers = _import_transformers()
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, ... for a bad folder
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"cannot load the tokenizer of {model} from {folder}: {first}") from None
    return _HfTokenizer(model, tok)


def _load_fast(model: str, folder: Path) -> PromptTokenizer:
    if not (folder / "tokenizer.json").is_file():
        raise InputError(
            f"loading the tokenizer of {model} ({folder} has no tokenizer.json) needs transformers: {HF_EXTRA_HINT}"
        )
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise InputError(
            f"loading the tokenizer of {model} needs transformers or tokenizers: {HF_EXTRA_HINT}"
        ) from None
    try:
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    except Exception as exc:  # tokenizers raises its own Exception for a malformed file
        raise InputError(f"cannot load {folder / 'tokenizer.json'}: {exc}") from None
    return _FastTokenizer(model, tok, config if isinstance(config, dict) else {})


@functools.lru_cache(maxsize=8)
def load_tokenizer(model: str, *, prefer_transformers: bool = True) -> PromptTokenizer:
    """The tokenizer of ``model`` (a local folder or a Hugging Face id in the local cache), or InputError.

    ``transformers`` when installed (as vLLM loads it), else ``tokenizers`` for a ``tokenizer.json``;
    ``prefer_transformers=False`` takes the second path even when transformers is there.
    """
    folder = tokenizer_folder(model)
    if folder is None:
        where = "has no tokenizer files" if Path(model).expanduser().is_dir() else "is not in the local cache"
        raise InputError(
            f"no tokenizer for {model}: the workload is made of the model's own tokens, but {model} {where} "
            f"({', '.join(TOKENIZER_FILES[:2])} in the model folder, or the Hugging Face cache {hub_cache_dir()})"
        )
    if prefer_transformers:
        try:
            _import_transformers()
        except ImportError:
            pass
        else:
            return _load_hf(model, folder)
    return _load_fast(model, folder)


def prompt_tokenizer(model: str | None, *, sim_fallback: bool) -> PromptTokenizer:
    """The tokenizer a workload for ``model`` is made of.

    The model's own when it has one on this machine. Otherwise the simulator's word tokenizer when
    ``sim_fallback`` (the simulated engine serves any id), else the one-line :class:`InputError` of
    :func:`load_tokenizer`. ``None`` (no model named) is the simulator's.
    """
    if model is None or (sim_fallback and tokenizer_folder(model) is None):
        return SimTokenizer()
    return load_tokenizer(model)


__all__ = [
    "NO_CHAT_TEMPLATE",
    "PromptTokenizer",
    "load_tokenizer",
    "prompt_tokenizer",
    "tokenizer_folder",
]
