"""Phrases -> token ids for CLIPSeg's text encoder: CLIP's byte-level BPE, or a small word vocabulary.

``CLIPTokenizer`` is CLIP's tokenizer (Radford et al. 2021, Sec. 2.4; Sennrich et al. 2016's byte-pair
encoding over UTF-8 bytes, as GPT-2): clean the text (``ftfy``, HTML entities, whitespace, lower case), split
it into words, numbers digit by digit and punctuation runs, map each piece's UTF-8 bytes to printable
characters, then merge adjacent symbols in the order the 48,894 learned merges rank them. 49,408 ids: 256
bytes, 256 bytes ending a word (``</w>``), one per merge, ``<start_of_text>`` (49406) and ``<end_of_text>``
(49407, the largest: the text encoder pools there). The merges ship inside the ``open_clip_torch`` wheel
(``open_clip/bpe_simple_vocab_16e6.txt.gz``); it and the ``ftfy`` and ``regex`` packages it depends on are
the ``clip`` extra: ``pip install "seglab[clip]"``.

``WordTokenizer`` maps a fixed list of words to ids: what a model trained from scratch on synthetic phrases
("the red circle") needs, with no extra dependency.

Both return ``(N, context_length)`` int64: start token, the phrase, end token, zeros after.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import torch

__all__ = ["CLIPTokenizer", "WordTokenizer", "bytes_to_unicode", "clip_vocab_path"]

_EXTRA = 'pip install "seglab[clip]"'
_NUM_MERGES = 49152 - 256 - 2  # the merges CLIP uses from the file (its first line is a header)


def clip_vocab_path() -> Path:
    """Where ``open_clip_torch`` keeps CLIP's BPE merges (found without importing open_clip).

    Raises:
        ModuleNotFoundError: ``open_clip_torch`` is not installed (the message names the extra).
    """
    spec = importlib.util.find_spec("open_clip")
    path = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz" if spec else None
    if path is None or not path.is_file():
        raise ModuleNotFoundError(f"CLIP's BPE vocabulary comes with open_clip_torch, which is not installed: {_EXTRA}")
    return path


@lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from the 256 byte values to printable characters: printable Latin-1 bytes map to
    themselves, the others (controls, space, …) to ``chr(256 + i)`` in byte order, so BPE never sees
    whitespace or control characters. The dict's order (printable bytes first) is the order of the
    vocabulary's first 256 ids."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {byte: chr(byte) for byte in printable}
    others = [byte for byte in range(256) if byte not in table]
    table.update({byte: chr(256 + i) for i, byte in enumerate(others)})
    return table


def _phrases(phrases: str | Sequence[str]) -> list[str]:
    if isinstance(phrases, str):
        return [phrases]
    if not isinstance(phrases, Sequence) or not all(isinstance(p, str) for p in phrases):
        raise TypeError(f"phrases must be a str or a list of str; got {type(phrases).__name__}")
    if not phrases:
        raise ValueError("phrases is an empty list: pass at least one phrase")
    return list(phrases)


def _pack(pieces: list[list[int]], phrases: list[str], sot: int, eot: int, context_length: int,
          truncate: bool) -> torch.Tensor:
    """Start + ids + end, zero-padded to ``(N, context_length)`` int64."""
    out = torch.zeros(len(pieces), context_length, dtype=torch.long)
    for row, (ids, phrase) in enumerate(zip(pieces, phrases)):
        if not ids:
            raise ValueError(f"phrases[{row}] = {phrase!r} is empty: give each prompt at least one word")
        tokens = [sot, *ids, eot]
        if len(tokens) > context_length:
            if not truncate:
                raise ValueError(f"phrases[{row}] needs {len(tokens)} tokens, more than context_length="
                                 f"{context_length}: shorten it or pass truncate=True")
            tokens = [*tokens[:context_length - 1], eot]
        out[row, :len(tokens)] = torch.tensor(tokens)
    return out


class CLIPTokenizer:
    """CLIP's byte-level BPE tokenizer (Radford et al. 2021), equal to ``open_clip.tokenize``.

    Args:
        vocab_path: the gzipped merges file; default ``clip_vocab_path()`` (inside ``open_clip_torch``).
        context_length: tokens per phrase, start and end included (77 in CLIP).

    Shapes: ``tokenizer(phrases)``: a str or a list of N str -> ``(N, context_length)`` int64.

    Raises:
        ModuleNotFoundError: ``open_clip_torch`` (or ``ftfy`` / ``regex``) missing: the message names
            the ``clip`` extra.
        ValueError: an empty phrase, or one longer than ``context_length`` tokens unless ``truncate=True``
            (then, as open_clip does, the first ``context_length - 1`` tokens and the end token).

    Differences from open_clip: text spelling a special token (``<end_of_text>``) is ordinary text here, so a
    phrase cannot end itself early; open_clip maps it to the special id. ``decode`` returns words separated
    by spaces, like open_clip's.
    """

    def __init__(self, vocab_path: str | Path | None = None, context_length: int = 77) -> None:
        try:
            import ftfy
            import regex
        except ModuleNotFoundError as error:
            raise ModuleNotFoundError(f"CLIPTokenizer needs {error.name}, part of the clip extra: {_EXTRA}") from None
        self._fix_text = ftfy.fix_text
        self.context_length = context_length
        lines = gzip.open(vocab_path or clip_vocab_path()).read().decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1:_NUM_MERGES + 1]]
        symbols = list(bytes_to_unicode().values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
        vocab += ["<start_of_text>", "<end_of_text>"]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.decoder = dict(enumerate(vocab))
        self.ranks = {merge: i for i, merge in enumerate(merges)}
        self.vocab_size = len(vocab)
        self.sot_token_id, self.eot_token_id = self.encoder["<start_of_text>"], self.encoder["<end_of_text>"]
        # contractions, runs of letters, single digits, runs of anything else that is not a space
        self._split = regex.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+", regex.IGNORECASE)
        self._byte_table = bytes_to_unicode()
        self._cache: dict[str, list[str]] = {}

    def clean(self, text: str) -> str:
        """``ftfy.fix_text``, HTML entities unescaped twice, whitespace runs to one space, lower case."""
        text = html.unescape(html.unescape(self._fix_text(text)))
        return " ".join(text.split()).lower()

    def bpe(self, word: str) -> list[str]:
        """One pre-token (already byte-mapped) -> its BPE symbols, the last ending in ``</w>``."""
        if word in self._cache:
            return self._cache[word]
        symbols = [*word[:-1], word[-1] + "</w>"]
        while len(symbols) > 1:
            pairs = set(zip(symbols, symbols[1:]))
            best = min(pairs, key=lambda pair: self.ranks.get(pair, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(symbols):  # merge every occurrence of the best pair, left to right
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        self._cache[word] = symbols
        return symbols

    def encode(self, text: str) -> list[int]:
        """A phrase -> its token ids, without the start and end tokens."""
        ids = []
        for piece in self._split.findall(self.clean(text)):
            mapped = "".join(self._byte_table[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[symbol] for symbol in self.bpe(mapped))
        return ids

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Token ids -> text (start, end and padding dropped; words separated by single spaces)."""
        text = "".join(self.decoder[int(i)] for i in ids if 0 < int(i) < self.sot_token_id)
        inverse = {c: b for b, c in self._byte_table.items()}
        words = (bytes(inverse[c] for c in word).decode("utf-8", errors="replace") for word in text.split("</w>"))
        return " ".join(w for w in words if w)

    def __call__(self, phrases: str | Sequence[str], *, truncate: bool = False) -> torch.Tensor:
        phrases = _phrases(phrases)
        return _pack([self.encode(p) for p in phrases], phrases, self.sot_token_id, self.eot_token_id,
                     self.context_length, truncate)


class WordTokenizer:
    """A closed word vocabulary for small CLIPSeg models trained from scratch ("the red circle").

    Args:
        words: the known words (lower case, no spaces); id 0 is padding, words get 1…W in the given order,
            then ``<start>`` (W + 1) and ``<end>`` (W + 2, the largest id, where the text encoder pools).
        context_length: tokens per phrase, start and end included.

    Shapes: ``tokenizer(phrases)``: a str or a list of N str -> ``(N, context_length)`` int64; a phrase is
    lower-cased and split on whitespace. ``vocab_size`` = W + 3 (the model's ``vocab_size``).

    Raises:
        ValueError: a word outside the vocabulary (the message lists the known words), an empty phrase, or one
            longer than ``context_length`` tokens unless ``truncate=True``.
    """

    def __init__(self, words: Sequence[str], context_length: int = 8) -> None:
        words = [w.lower() for w in words]
        if not words or len(set(words)) != len(words) or any(not w or w != w.strip() or " " in w for w in words):
            raise ValueError(f"words must be distinct non-empty words without spaces; got {list(words)}")
        self.words, self.context_length = words, context_length
        self.encoder = {w: i + 1 for i, w in enumerate(words)}
        self.sot_token_id, self.eot_token_id = len(words) + 1, len(words) + 2
        self.vocab_size = len(words) + 3

    def encode(self, text: str) -> list[int]:
        """A phrase -> its word ids, without the start and end tokens."""
        unknown = [w for w in text.lower().split() if w not in self.encoder]
        if unknown:
            raise ValueError(f"phrase {text!r} has words outside the vocabulary: {unknown}; known words: "
                             f"{', '.join(self.words)}")
        return [self.encoder[w] for w in text.lower().split()]

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Token ids -> the phrase (start, end and padding dropped)."""
        return " ".join(self.words[int(i) - 1] for i in ids if 0 < int(i) < self.sot_token_id)

    def __call__(self, phrases: str | Sequence[str], *, truncate: bool = False) -> torch.Tensor:
        phrases = _phrases(phrases)
        return _pack([self.encode(p) for p in phrases], phrases, self.sot_token_id, self.eot_token_id,
                     self.context_length, truncate)
