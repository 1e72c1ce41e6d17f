"""ROUGE for summarization: hand-computed scores, parity with rouge-score's default scorer on English, non-Latin
tokenization, the offline sentence splitter and the streaming accumulator.

Arithmetic used below: for ROUGE-N, P = overlap / n-grams(pred), R = overlap / n-grams(ref), F = 2PR / (P + R),
which equals 2 * overlap / (n-grams(pred) + n-grams(ref)); ROUGE-L is the same with overlap = LCS length."""

from __future__ import annotations

import re

import pytest
from rouge_score.rouge_scorer import RougeScorer

from tuneforge.evaluate.rouge import (
    ROUGE_KEYS,
    RougeAccumulator,
    RougeTokenizer,
    rouge_scores,
    sentences_per_line,
    split_sentences,
)


def default_scorer() -> RougeScorer:
    return RougeScorer(list(ROUGE_KEYS), use_stemmer=True)


# ---------------------------------------------------------------- hand-computed scores


def test_identical_strings_score_one():
    s = rouge_scores(["Officials said the bridge will reopen in May."],
                     ["Officials said the bridge will reopen in May."])
    assert all(s[k] == pytest.approx(1.0) for k in ROUGE_KEYS)
    assert s["gen_len"] == 8.0


def test_disjoint_strings_score_zero():
    s = rouge_scores(["sunny weather expected"], ["stocks fell sharply"])
    assert all(s[k] == 0.0 for k in ROUGE_KEYS)


def test_identical_empty_strings_score_zero_not_one():
    # rouge-score returns 0 whenever either side has no tokens, even for two empty strings
    s = rouge_scores([""], [""])
    assert all(s[k] == 0.0 for k in ROUGE_KEYS) and s["gen_len"] == 0.0


def test_cat_mat_hand_computed():
    # pred: the cat sat on the mat (6 tokens)   ref: the cat lay on the mat (6 tokens); no token > 3 chars, no stemming
    # rouge1: overlap the x2, cat, on, mat = 5 -> 2*5/(6+6) = 5/6
    # rouge2: pred bigrams the-cat cat-sat sat-on on-the the-mat; ref the-cat cat-lay lay-on on-the the-mat
    #         overlap the-cat, on-the, the-mat = 3 -> 2*3/(5+5) = 3/5
    # rougeL: LCS "the cat on the mat" = 5 -> 5/6; one sentence each, so rougeLsum = rougeL
    s = rouge_scores(["the cat sat on the mat"], ["the cat lay on the mat"])
    assert s["rouge1"] == pytest.approx(5 / 6)
    assert s["rouge2"] == pytest.approx(3 / 5)
    assert s["rougeL"] == pytest.approx(5 / 6)
    assert s["rougeLsum"] == pytest.approx(5 / 6)
    assert s["gen_len"] == 6.0


def test_rougeL_differs_from_rouge1_on_reordered_words():
    # Lin (2004): tokens after stemming: ref polic kill the gunman; pred the gunman kill polic (4 tokens each)
    # rouge1: all 4 unigrams match -> 1.0
    # rouge2: ref polic-kill kill-the the-gunman; pred the-gunman gunman-kill kill-polic -> 1 of 3 -> 1/3
    # rougeL: LCS = "the gunman" (2) -> 2*2/(4+4) = 1/2
    s = rouge_scores(["the gunman killed police"], ["police killed the gunman"])
    assert s["rouge1"] == pytest.approx(1.0)
    assert s["rouge2"] == pytest.approx(1 / 3)
    assert s["rougeL"] == pytest.approx(0.5)
    assert s["rougeL"] != s["rouge1"]


def test_rougeLsum_differs_from_rougeL_because_sentences_are_split():
    # tokens (thousands -> thousand): ref the storm hit the coast | thousand lost power  (8)
    #                                 pred thousand lost power | the storm hit the coast (8)
    # rouge1 = 8/8 = 1.0; rouge2: 6 of 7 bigrams shared (only coast-thousand vs power-the differ) -> 6/7
    # rougeL over the whole text: LCS = "the storm hit the coast" (5) -> 2*5/16 = 0.625
    # rougeLsum: union LCS per reference sentence: sentence 1 finds all 5 tokens in pred sentence 2,
    #            sentence 2 finds all 3 in pred sentence 1 -> 8 hits -> 1.0
    ref = "The storm hit the coast. Thousands lost power."
    pred = "Thousands lost power. The storm hit the coast."
    s = rouge_scores([pred], [ref])
    assert s["rouge1"] == pytest.approx(1.0)
    assert s["rouge2"] == pytest.approx(6 / 7)
    assert s["rougeL"] == pytest.approx(0.625)
    assert s["rougeLsum"] == pytest.approx(1.0)
    assert s["rougeLsum"] != s["rougeL"]
    # without newlines between sentences rouge-score sees one "sentence" and rougeLsum collapses to rougeL
    unsplit = default_scorer().score(ref, pred)
    assert unsplit["rougeLsum"].fmeasure == pytest.approx(unsplit["rougeL"].fmeasure) == pytest.approx(0.625)


def test_reference_is_the_target_for_asymmetric_rougeLsum():
    # rougeLsum is not symmetric. ref sentences r1 = cat dog fox dog, r2 = dog dog dog fox (8 tokens); pred dog cat (2)
    # r1 vs pred: LCS length 1, rouge-score's backtracking picks "cat"; r2 vs pred: "dog" -> 2 hits
    # P = 2/2, R = 2/8 -> F = 2*1*0.25/1.25 = 0.4
    # swapped, the one reference sentence "dog cat" gets LCS "dog" with both -> union 1 hit: P=1/8, R=1/2 -> F=0.2
    ref, pred = "cat dog fox dog. dog dog dog fox.", "dog cat."
    assert rouge_scores([pred], [ref])["rougeLsum"] == pytest.approx(0.4)
    assert rouge_scores([ref], [pred])["rougeLsum"] == pytest.approx(0.2)


def test_stemmer_parameter():
    # stemmed (Porter, tokens > 3 chars): cats->cat, sitting->sit, mats->mat, sits->sit: cat sit on mat twice -> 1.0
    pred, ref = ["cats sitting on mats"], ["cat sits on mat"]
    assert rouge_scores(pred, ref)["rouge1"] == pytest.approx(1.0)
    # unstemmed: only "on" is shared (cats/cat, sitting/sits, mats/mat differ) -> 2*1/(4+4) = 0.25
    assert rouge_scores(pred, ref, stemmer=False)["rouge1"] == pytest.approx(0.25)


# ---------------------------------------------------------------- parity with rouge-score on English

ENGLISH = [
    ("The quick brown fox jumps over the lazy dog.", "The quick brown dog jumped on the log!"),
    ("Police killed the gunman. Officials said 3 people were injured.",
     "The gunman was killed by police; three people were hurt, officials said."),
    ("Stocks rallied on Tuesday, as investors cheered earnings.",
     "Investors cheered strong earnings and stocks rallied Tuesday."),
    ("It's raining cats and dogs in the U.S. tonight, Mr. Smith's forecast says.",
     "Heavy rains are expected across the U.S. tonight. Stay indoors! Flooding is likely."),
    ("Revenue grew 3.5% to $1,200 million in 2023-24 (per the CEO's e-mail).",
     "The company's revenues increased by 3.5 percent in fiscal 2023-24."),
    ("", "Nothing was predicted."),
]


@pytest.mark.parametrize(("pred", "ref"), ENGLISH)
def test_english_parity_with_default_rouge_scorer(pred: str, ref: str):
    ours = rouge_scores([pred], [ref])
    default = default_scorer()
    raw = default.score(ref, pred)
    lines = default.score(sentences_per_line(ref), sentences_per_line(pred))
    for key in ("rouge1", "rouge2", "rougeL"):
        assert ours[key] == pytest.approx(raw[key].fmeasure, abs=1e-12)
    assert ours["rougeLsum"] == pytest.approx(lines["rougeLsum"].fmeasure, abs=1e-12)


@pytest.mark.parametrize("stemmer", [True, False])
def test_english_tokens_match_default_tokenizer(stemmer: bool):
    from rouge_score.tokenizers import DefaultTokenizer

    default, ours = DefaultTokenizer(use_stemmer=stemmer), RougeTokenizer(stemmer=stemmer)
    for pair in ENGLISH:
        for text in pair:
            assert ours.tokenize(text) == default.tokenize(text)


# ---------------------------------------------------------------- non-Latin text

NON_LATIN = [
    # zh: chars 猫 坐/躺 在 垫 子 上 (6 each): 5 shared -> 5/6; bigrams 猫坐 坐在 在垫 垫子 子上: 3 of 5 -> 3/5
    ("zh", "猫坐在垫子上", "猫躺在垫子上", 5 / 6, 3 / 5),
    # ja: pred 猫 が マ ッ ト の 上 に 座 っ た (11), ref 猫 が マ ッ ト の 上 に 寝 た (10), 9 shared (not 座 っ / 寝)
    #     -> 2*9/21 = 6/7; bigrams: pred 10, ref 9, shared the 7 from 猫が to 上に -> 2*7/(10+9) = 14/19
    ("ja", "猫がマットの上に座った", "猫がマットの上に寝た", 6 / 7, 14 / 19),
    # ru: words кошка сидела/лежала на коврике: 3 of 4 -> 3/4; bigrams (кошка-X, X-на, на-коврике): 1 of 3 -> 1/3
    ("ru", "Кошка сидела на коврике", "Кошка лежала на коврике", 3 / 4, 1 / 3),
    # hi: words बिल्ली चटाई पर बैठी/लेटी: 3 of 4 -> 3/4; bigrams बिल्ली-चटाई, चटाई-पर shared: 2 of 3 -> 2/3
    ("hi", "बिल्ली चटाई पर बैठी", "बिल्ली चटाई पर लेटी", 3 / 4, 2 / 3),
]


@pytest.mark.parametrize(("lang", "pred", "ref", "r1", "r2"), NON_LATIN)
def test_non_latin_overlap_scores(lang: str, pred: str, ref: str, r1: float, r2: float):
    s = rouge_scores([pred], [ref])
    assert s["rouge1"] == pytest.approx(r1), lang
    assert s["rouge2"] == pytest.approx(r2), lang
    assert s["rougeL"] > 0 and s["rougeLsum"] > 0
    # the default tokenizer keeps only [a-z0-9]: no tokens at all, hence 0 -- why a custom tokenizer is needed
    assert default_scorer().score(ref, pred)["rouge1"].fmeasure == 0.0


def test_tokenizer_keeps_combining_marks_inside_words():
    # Python's \w does not match vowel signs / virama (Unicode category M), so \w+ shreds Devanagari words
    assert re.findall(r"\w+", "बिल्ली") == ["ब", "ल", "ल"]
    assert RougeTokenizer().tokenize("बिल्ली पर") == ["बिल्ली", "पर"]


def test_tokenizer_scripts_without_spaces_are_per_character():
    tok = RougeTokenizer()
    assert tok.tokenize("猫が寝た。") == ["猫", "が", "寝", "た"]
    assert tok.tokenize("ABC東京2024年") == ["abc", "東", "京", "2024", "年"]
    assert tok.tokenize("แมว") == ["แ", "ม", "ว"]
    assert tok.tokenize("Москва, Кошка") == ["москва", "кошка"]  # lowercased, not stemmed (non-ASCII)
    assert tok.tokenize("snake_case") == ["snake", "case"]  # like the default tokenizer, "_" separates


# ---------------------------------------------------------------- split_sentences


@pytest.mark.parametrize(("text", "expected"), [
    ("Mr. Smith met Dr. Jones. They talked.", ["Mr. Smith met Dr. Jones.", "They talked."]),
    ("Fruit, e.g. apples, i.e. food, etc. are sold in the U.S. now. No. 5 won!",
     ["Fruit, e.g. apples, i.e. food, etc. are sold in the U.S. now.", "No. 5 won!"]),
    ("Mrs. Lee paid 3.5 dollars. Prices rose 0.25 percent.",
     ["Mrs. Lee paid 3.5 dollars.", "Prices rose 0.25 percent."]),
    ("Really? Yes! Fine.", ["Really?", "Yes!", "Fine."]),
    ('He said "Stop!" Then he left.', ['He said "Stop!"', "Then he left."]),
    ("它很好。我们走吧。", ["它很好。", "我们走吧。"]),
    ("今日は晴れ。明日は雨。", ["今日は晴れ。", "明日は雨。"]),
    ("वह घर गया। वह सो गया।", ["वह घर गया।", "वह सो गया।"]),
    ("first line\nsecond line\r\n\n  third.  ", ["first line", "second line", "third."]),
    ("", []),
])
def test_split_sentences(text: str, expected: list[str]):
    assert split_sentences(text) == expected


def test_sentences_per_line_joins_with_newlines():
    assert sentences_per_line("One. Two! Three?") == "One.\nTwo!\nThree?"


# ---------------------------------------------------------------- accumulator

PAIRS = [
    ("the cat sat on the mat", "the cat lay on the mat"),
    ("Thousands lost power. The storm hit the coast.", "The storm hit the coast. Thousands lost power."),
    ("猫坐在垫子上", "猫躺在垫子上"),
    ("the gunman killed police", "police killed the gunman"),
]


def test_streaming_two_batches_equals_one_batch():
    preds, refs = [p for p, _ in PAIRS], [r for _, r in PAIRS]
    once = RougeAccumulator()
    once.add(preds, refs)
    twice = RougeAccumulator()
    twice.add(preds[:1], refs[:1])
    twice.add(preds[1:], refs[1:])
    assert twice.count == once.count == 4
    assert twice.result() == pytest.approx(once.result())
    # mean of the per-example rouge1 computed above: (5/6 + 1 + 5/6 + 1) / 4
    assert once.result()["rouge1"] == pytest.approx((5 / 6 + 1 + 5 / 6 + 1) / 4)
    # whitespace word counts 6, 8, 1 (no spaces in Chinese), 4 -> 19 / 4
    assert once.result()["gen_len"] == pytest.approx(19 / 4)
    assert rouge_scores(preds, refs) == pytest.approx(once.result())


def test_gen_len_uses_given_lengths():
    acc = RougeAccumulator()
    acc.add(["a b", "c"], ["a b", "c"], lengths=[3, 5])
    acc.add(["d"], ["d"], lengths=[10])
    assert acc.result()["gen_len"] == pytest.approx(18 / 3)


def test_empty_accumulator_returns_zeros():
    assert RougeAccumulator().result() == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0, "rougeLsum": 0.0,
                                           "gen_len": 0.0}
    acc = RougeAccumulator()
    acc.add([], [])
    assert acc.result()["rouge1"] == 0.0 and acc.count == 0


def test_mismatched_inputs_raise():
    acc = RougeAccumulator()
    with pytest.raises(ValueError, match="references"):
        acc.add(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="lengths"):
        acc.add(["a"], ["a"], lengths=[1, 2])
    with pytest.raises(TypeError):
        acc.add("a prediction", "a reference")  # type: ignore[arg-type]
    assert acc.count == 0
