"""ROUGE for summarization, computed with ``rouge-score`` directly (offline; no ``evaluate.load``, no nltk data).

>>> from tuneforge.evaluate.rouge import RougeAccumulator, rouge_scores, split_sentences
>>> split_sentences("Dr. Smith paid $3.5 million. Then he left!")
['Dr. Smith paid $3.5 million.', 'Then he left!']
>>> s = rouge_scores(["the cat sat on the mat"], ["the cat lay on the mat"])
>>> {k: round(v, 4) for k, v in s.items()}
{'rouge1': 0.8333, 'rouge2': 0.6, 'rougeL': 0.8333, 'rougeLsum': 0.8333, 'gen_len': 6.0}
>>> acc = RougeAccumulator()
>>> [round(s["rougeL"], 4) for s in acc.add(["猫坐在垫子上"], ["猫躺在垫子上"], lengths=[7])]
[0.8333]
>>> round(acc.result()["rouge1"], 4), acc.result()["gen_len"]
(0.8333, 7.0)

Scores are per-example F-measures (fractions in [0, 1]) averaged over examples, as in the HF summarization examples
(``use_stemmer=True``; rougeLsum on texts with one sentence per line). The tokenizer matches rouge-score's default
on plain English and, unlike it, keeps non-Latin text: the default drops every character outside ``[a-z0-9]``.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence

ROUGE_KEYS: tuple[str, ...] = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# Scripts written without spaces between words: every character is one token (with its combining marks).
_NO_SPACE = (
    "\u3005-\u3007"  # iteration/closing marks, ideographic zero
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u31f0-\u31ff"  # Katakana phonetic extensions
    "\u3400-\u4dbf"  # CJK extension A
    "\u4e00-\u9fff"  # CJK unified ideographs
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\uff66-\uff9f"  # half-width Katakana
    "\U00020000-\U0003ffff"  # CJK extensions B.. (planes 2 and 3)
    "\u0e00-\u0eff"  # Thai, Lao
    "\u1000-\u109f"  # Myanmar
    "\u1780-\u17ff"  # Khmer
)

# Abbreviations whose final "." does not end a sentence (compared lowercased, leading quotes/brackets stripped).
_ABBREVIATIONS = frozenset({"mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "jr.", "sr.", "vs.", "e.g.", "i.e.",
                            "etc.", "u.s.", "u.k.", "no."})
_CLOSERS = "\"')\\]\u201d\u2019\u300d\u300f\uff09"  # quotes, brackets (ASCII, typographic, CJK)
_BOUNDARY = re.compile(rf"(?P<stop>[.!?।॥]+)[{_CLOSERS}]*(?=\s)|[\u3002\uff01\uff1f]+[{_CLOSERS}]*")


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences with a regex (no nltk/punkt data needed); newlines are always boundaries.

    A boundary follows ``.``/``!``/``?``/``।`` (plus closing quotes/brackets) when whitespace comes next, and
    directly follows the CJK full stop, exclamation and question marks. A ``.`` ending a known abbreviation
    (Mr., e.g., U.S., ...) is not a boundary; decimals like 3.5 never are, as no whitespace follows their dot.

    >>> split_sentences("Mr. Li won. Really?\\n它很好。我们走吧。")
    ['Mr. Li won.', 'Really?', '它很好。', '我们走吧。']
    """
    sentences: list[str] = []
    for line in text.splitlines():
        start = 0
        for m in _BOUNDARY.finditer(line):
            if m.group("stop") == "." and _word_ending_at(line, m.end("stop")) in _ABBREVIATIONS:
                continue
            sentences.append(line[start:m.end()].strip())
            start = m.end()
        sentences.append(line[start:].strip())
    return [s for s in sentences if s]


def _word_ending_at(line: str, end: int) -> str:
    return line[:end].rsplit(None, 1)[-1].lstrip("\"'([\u201c\u2018").lower()


def sentences_per_line(text: str) -> str:
    """``text`` with one sentence per line: the input format rougeLsum expects."""
    return "\n".join(split_sentences(text))


@functools.cache
def _token_re() -> re.Pattern[str]:
    # Python's \w excludes combining marks (categories Mn/Mc/Me), so r"\w+" cuts Devanagari, Bengali, Tamil, ...
    # words at every vowel sign and virama ("बिल्ली" -> ["ब", "ल", "ल"]): marks are added to the word class here.
    # Scanning planes 0-1 takes ~20 ms; above them the only marks are the variation selectors U+E0100-U+E01EF.
    marks = [cp for cp in range(0x20000) if unicodedata.category(chr(cp)).startswith("M")]
    ranges: list[list[int]] = []
    for cp in marks:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    mark_class = "".join(f"{chr(a)}-{chr(b)}" for a, b in ranges) + "\U000e0100-\U000e01ef"
    # A no-space-script character (+ its marks) alone, else a run of word characters (minus "_") and marks.
    return re.compile(rf"[{_NO_SPACE}][{mark_class}]*|(?:[^\W_{_NO_SPACE}]|[{mark_class}])+", re.UNICODE)


class RougeTokenizer:
    """Unicode-aware tokenizer for ``RougeScorer(..., tokenizer=...)``, which only calls ``.tokenize(text)``.

    Lowercases; tokens are runs of letters/digits (with their combining marks); CJK, kana, Thai, Lao, Khmer and
    Myanmar characters are one token each. With ``stemmer`` the Porter stemmer is applied, as rouge-score's default
    does, to ASCII tokens longer than 3 characters, so plain English tokenizes exactly like
    ``DefaultTokenizer(use_stemmer=stemmer)``.

    >>> RougeTokenizer().tokenize("The cats' 2 naps, 猫が寝た; Кошки спят.")
    ['the', 'cat', '2', 'nap', '猫', 'が', '寝', 'た', 'кошки', 'спят']
    """

    def __init__(self, stemmer: bool = True) -> None:
        from nltk.stem import porter

        self._stemmer = porter.PorterStemmer() if stemmer else None

    def tokenize(self, text: str) -> list[str]:
        tokens = _token_re().findall(text.lower())
        if self._stemmer is None:
            return tokens
        stem = self._stemmer.stem
        return [stem(t) if len(t) > 3 and t.isascii() else t for t in tokens]


class RougeAccumulator:
    """Streaming ROUGE: ``add`` scores each pair at once and keeps only running sums; ``result`` averages them."""

    def __init__(self, stemmer: bool = True) -> None:
        from rouge_score.rouge_scorer import RougeScorer

        self._scorer = RougeScorer(list(ROUGE_KEYS), tokenizer=RougeTokenizer(stemmer))
        self._sums = dict.fromkeys(ROUGE_KEYS, 0.0)
        self._length_sum = 0.0
        self.count = 0

    def add(self, predictions: Sequence[str], references: Sequence[str],
            lengths: Sequence[int] | None = None) -> list[dict[str, float]]:
        """Score ``predictions[i]`` against ``references[i]``; ``lengths`` (e.g. generated token counts) feeds
        ``gen_len``, which otherwise counts whitespace-separated words of each prediction. Returns the
        per-example F-measures (for error analysis)."""
        if isinstance(predictions, str) or isinstance(references, str):
            raise TypeError("predictions and references must be sequences of strings, not a single string")
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
        if lengths is not None and len(lengths) != len(predictions):
            raise ValueError(f"{len(lengths)} lengths for {len(predictions)} predictions")
        per_example: list[dict[str, float]] = []
        for prediction, reference in zip(predictions, references):
            # One sentence per line for rougeLsum; the other types see the same tokens (newlines are separators).
            scores = self._scorer.score(sentences_per_line(reference), sentences_per_line(prediction))
            per_example.append({key: scores[key].fmeasure for key in ROUGE_KEYS})
            for key in ROUGE_KEYS:
                self._sums[key] += scores[key].fmeasure
        if lengths is not None:
            self._length_sum += float(sum(lengths))
        else:
            self._length_sum += sum(len(p.split()) for p in predictions)
        self.count += len(predictions)
        return per_example

    def shard_state(self) -> tuple[dict[str, float], float, int]:
        """The running sums (evaluate/shards.py merges the processes' parts)."""
        return dict(self._sums), self._length_sum, self.count

    def merge_shards(self, parts: list[tuple[dict[str, float], float, int]]) -> None:
        """Become the sum of every process's part (this one's included), added in the order given."""
        self._sums = {key: sum(p[0][key] for p in parts) for key in ROUGE_KEYS}
        self._length_sum = sum(p[1] for p in parts)
        self.count = sum(p[2] for p in parts)

    def result(self) -> dict[str, float]:
        """Mean F-measure per ROUGE type (fractions in [0, 1]) and mean ``gen_len``; all zeros when empty."""
        n = max(self.count, 1)
        out = {key: total / n for key, total in self._sums.items()}
        out["gen_len"] = self._length_sum / n
        return out


def rouge_scores(predictions: Sequence[str], references: Sequence[str], lengths: Sequence[int] | None = None,
                 stemmer: bool = True) -> dict[str, float]:
    """ROUGE of a whole prediction set at once (see ``RougeAccumulator``)."""
    acc = RougeAccumulator(stemmer=stemmer)
    acc.add(predictions, references, lengths)
    return acc.result()
