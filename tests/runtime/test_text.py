"""The torch-free text front end: normalisation (upstream's routing around wetext, checked on a recorded
corpus), CJK spacing, SentencePiece pieces, upstream's segmenting rule (architecture.md §3.5) and the
Tokenizer's checks.

The corpus `tests/data/text_normalization.tsv` holds, for every input, `expected` = upstream on Linux
(WeTextProcessing 1.2.0 through upstream's `TextNormalizer.normalize`) and `ours` = the runtime's
`normalize` (wetext). CI checks `ours` without pynini; where WeTextProcessing is installed (the
`tn-reference` extra) `expected` is recomputed live. Re-record after changing the corpus or a version:

    python tests/runtime/test_text.py --record    # needs WeTextProcessing==1.2.0 (pynini)
"""

from __future__ import annotations

import importlib.util
import logging
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from indextts2_onnx.runtime import text as text_module
from indextts2_onnx.runtime.errors import InputError
from indextts2_onnx.runtime.text import (
    PINYIN_TONE,
    Tokenizer,
    cjk_split_upper,
    normalize,
    normalize_with,
    split_segments,
    tokenize_pieces,
    use_chinese,
)

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "data" / "text_normalization.tsv"
COLUMNS = ("category", "language", "path", "input", "expected", "ours")
LOGGER = "indextts2_onnx.runtime.text"

# Rows whose `ours` equals `expected` (wetext 0.1.8 vs WeTextProcessing 1.2.0), of all rows.
AGREEING, ROWS = 251, 269
UPSTREAM_EXAMPLES = 47  # front.py's `__main__` cases (category upstream_example)
WETEXT_TESTED = "0.1.8"
CATEGORIES = {"upstream_example", "cardinal", "decimal", "negative", "percent", "fraction", "money", "date",
              "time", "measure", "abbreviation", "phone", "ordinal", "year", "range", "plus", "mixed", "pinyin",
              "annotation", "tech", "name", "email", "fullwidth", "traditional", "quote", "whitespace", "plain"}


@pytest.fixture(scope="module")
def bpe_bytes() -> bytes:
    """The tiny checkpoint's bpe.model (vocab 256, <s>=0, </s>=1, <unk>=2), made by the project's tool."""
    pytest.importorskip("torch")  # tools/make_checkpoint.py imports torch at module level
    spec = importlib.util.spec_from_file_location("make_checkpoint", REPO / "tools" / "make_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.train_bpe(256, 0)


@pytest.fixture(scope="module")
def tok(bpe_bytes) -> Tokenizer:
    return Tokenizer.load(bpe_bytes)


def letters(s: str) -> list[str]:
    """'AB.C' -> ['A', 'B', '.', 'C']: hand-built piece lists."""
    return list(s)


def joined(segments: list[list[str]]) -> list[str]:
    return ["".join(seg) for seg in segments]


# --- split_segments: every branch of §3.5 ------------------------------------------------------------


def test_closes_after_sentence_end_only_with_more_than_two_pieces(caplog):
    assert joined(split_segments(letters("AB.CDE."), max_tokens=5)) == ["AB.", "CDE."]
    # "A." has only 2 pieces: not closed; it runs on to max+1 and is hard-cut (with a warning)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert joined(split_segments(letters("A.BCD."), max_tokens=5)) == ["A.BCD", "."]
    assert "cut every 5 pieces" in caplog.text
    assert joined(split_segments(letters("A.BC"), max_tokens=5)) == ["A.BC"]


def test_every_closing_piece():
    for end in (".", "!", "?", "\u2581.", "\u2581?", "\u2581..."):
        assert split_segments(["A", "B", end, "C", "D", "E", "F"], max_tokens=5) == [["A", "B", end],
                                                                                    ["C", "D", "E", "F"]]
    # "▁!" is not a closing piece upstream (unknown in the official vocabulary)
    assert split_segments(["A", "B", "\u2581!", "C", "D", "E"], max_tokens=6) == [["A", "B", "\u2581!", "C",
                                                                                  "D", "E"]]


def test_comma_recursion_and_merge():
    pieces = letters("AB,CD,EF.")
    assert joined(split_segments(pieces, max_tokens=4)) == ["AB,", "CD,", "EF."]
    assert joined(split_segments(pieces, max_tokens=6)) == ["AB,CD,", "EF."]  # merged while it fits
    assert joined(split_segments(pieces, max_tokens=120)) == ["AB,CD,EF."]
    # the comma splits even a 2-piece run (the recursion ends it), "▁," too
    assert joined(split_segments(letters("A,BC."), max_tokens=4)) == ["A,", "BC."]
    assert split_segments(["A", "\u2581,", "B", "C", "."], max_tokens=4) == [["A", "\u2581,"], ["B", "C", "."]]


def test_comma_checked_before_length(caplog):
    # 5 pieces then a comma as 6th with max 5: the comma recursion sees 6 pieces and hard-cuts them
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert joined(split_segments(letters("ABCDE,"), max_tokens=5)) == ["ABCDE", ","]
    assert caplog.records


def test_hyphen_split():
    assert joined(split_segments(letters("AB-CD."), max_tokens=4)) == ["AB-", "CD."]
    assert joined(split_segments(letters("A-BC,"), max_tokens=3)) == ["A-", "BC,"]


def test_hard_cut_chunks_of_max(caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        out = split_segments(letters("ABCDEFGHIJ"), max_tokens=4)
    # each run is cut when it reaches max+1 = 5 pieces, into [4, 1]; the lone piece is its own segment
    # and no neighbours fit together under max (upstream behaviour, not "every 4 pieces" overall)
    assert joined(out) == ["ABCD", "E", "FGHI", "J"]
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


def test_final_merge_and_quick_streaming():
    pieces = letters("AB.CD.EF.")
    assert joined(split_segments(pieces, max_tokens=120)) == ["AB.CD.EF."]
    # at most max: merge only once more than `quick` pieces were seen (counting the candidate) ...
    assert joined(split_segments(pieces, max_tokens=10, quick_streaming_tokens=6)) == ["AB.", "CD.EF."]
    # ... or when the merged length is at most max/2
    assert joined(split_segments(pieces, max_tokens=12, quick_streaming_tokens=100)) == ["AB.CD.", "EF."]
    assert joined(split_segments(pieces, max_tokens=5)) == ["AB.", "CD.", "EF."]


def test_apostrophe_quirk():
    # §3.5: [A B C . ' D …] -> [A B C . '], [' D …]: the apostrophe ends one piece and starts the next
    out = split_segments(["A", "B", "C", ".", "'", "D", "E", "F"], max_tokens=4)
    assert out == [["A", "B", "C", ".", "'"], ["'", "D", "E", "F"]]
    out = split_segments(["A", "B", "C", ".", "\u2581'", "D", "E", "F"], max_tokens=4)
    assert out == [["A", "B", "C", ".", "\u2581'"], ["\u2581'", "D", "E", "F"]]
    # merged back, the apostrophe is there twice
    assert joined(split_segments(letters("ABC.'DEF."), max_tokens=120)) == ["ABC.''DEF."]


def test_empty_and_bad_max():
    assert split_segments([], 120) == []
    with pytest.raises(InputError):
        split_segments(["A"], 0)


# --- the corpus ---------------------------------------------------------------------------------------
# One row per line, tab-separated, UTF-8; `\\`, `\t` and `\n` inside a cell are written as `\\\\`, `\\t`, `\\n`.

_UNESCAPE = {"\\\\": "\\", "\\t": "\t", "\\n": "\n"}


def _unescape(cell: str) -> str:
    return re.sub(r"\\[\\tn]", lambda m: _UNESCAPE[m.group()], cell)


def _escape(cell: str) -> str:
    return cell.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def read_corpus(path: Path = CORPUS) -> list[dict[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert tuple(lines[0].split("\t")) == COLUMNS, lines[0]
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        assert len(cells) == len(COLUMNS), f"line {number}: {len(cells)} cells"
        rows.append(dict(zip(COLUMNS, map(_unescape, cells))))
    return rows


def write_corpus(rows: list[dict[str, str]], path: Path = CORPUS) -> None:
    lines = ["\t".join(COLUMNS)] + ["\t".join(_escape(row[c]) for c in COLUMNS) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --- upstream on Linux: front.py `TextNormalizer.normalize` around WeTextProcessing -------------------
# Transcribed from upstream (the routing `text.py` reproduces, written out independently here), glossary
# empty. Upstream orders distinct pinyin syllables, names and tech terms by Python's string hashing; the
# transcription fixes one order (longest first, then first seen), the one the runtime uses.

UP_CHAR_REP_MAP = {
    "：": ",", "；": ",", ";": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": " ", "·": "-", "、": ",",
    "...": "…", ",,,": "…", "，，，": "…", "……": "…", "“": "'", "”": "'", '"': "'", "‘": "'", "’": "'",
    "（": "'", "）": "'", "(": "'", ")": "'", "《": "'", "》": "'", "【": "'", "】": "'", "[": "'", "]": "'",
    "—": "-", "～": "-", "~": "-", "「": "'", "」": "'", ":": ",",
}
UP_ZH_CHAR_REP_MAP = {"$": ".", **UP_CHAR_REP_MAP}
UP_PINYIN = (r"(?<![a-z])((?:[bpmfdtnlgkhjqxzcsryw]|[zcs]h)?(?:[aeiouüv]|[ae]i|u[aio]|ao|ou|i[aue]|[uüv]e|"
             r"[uvü]ang?|uai|[aeiuv]n|[aeio]ng|ia[no]|i[ao]ng)|ng|er)([1-5])")
UP_NAME = r"[\u4e00-\u9fff]+(?:[-·—][\u4e00-\u9fff]+){1,2}"
UP_TECH = r"[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)+"
UP_CONTRACTION = r"(what|where|who|which|how|t?here|it|s?he|that|this)'s"
UP_ANNOTATION = re.compile(r"<([^|>\n]+)\|([^>\n]+)>")


def _up_order(found) -> list[str]:
    return sorted(dict.fromkeys(found), key=len, reverse=True)


def _up_protect_annotations(text: str) -> tuple[str, dict[str, str]]:
    placeholders: dict[str, str] = {}

    def alpha(n: int) -> str:
        s = ""
        while True:
            s = chr(ord("a") + n % 26) + s
            n = n // 26 - 1
            if n < 0:
                return s

    def replace(m: re.Match) -> str:
        key = f"PRONPLACEHOLDER{alpha(len(placeholders))}PRONPLACEHOLDER"
        placeholders[key] = m.group(0)
        return key

    return UP_ANNOTATION.sub(replace, text), placeholders


def up_use_chinese(text: str) -> bool:
    if re.search(r"[\u4e00-\u9fff]", text) or not re.search(r"[a-zA-Z]", text):
        return True
    if re.match(r"^[a-zA-Z0-9]+@[a-zA-Z0-9]+\.[a-zA-Z]+$", text):
        return True
    return bool(re.search(UP_PINYIN, text, re.IGNORECASE))


def upstream_normalize(text: str, zh_normalizer, en_normalizer) -> str:
    text, placeholders = _up_protect_annotations(text)
    if up_use_chinese(text):
        text = re.sub(UP_CONTRACTION, r"\1 is", text, flags=re.IGNORECASE)
        replaced = text.rstrip()
        tech = _up_order(re.findall(UP_TECH, replaced))
        for term in tech:
            replaced = replaced.replace(term, term.replace("-", "<H>"))
        pinyins = _up_order("".join(p) for p in re.findall(re.compile(UP_PINYIN, re.IGNORECASE), replaced))
        for i, p in enumerate(pinyins):
            replaced = replaced.replace(p, f"<pinyin_{chr(ord('a') + i)}>")
        names = _up_order(re.findall(re.compile(UP_NAME, re.IGNORECASE), replaced))
        for i, n in enumerate(names):
            replaced = replaced.replace(n, f"<n_{chr(ord('a') + i)}>")
        try:
            result = zh_normalizer.normalize(replaced)
        except Exception:
            result = ""
        for i, n in enumerate(names):
            result = result.replace(f"<n_{chr(ord('a') + i)}>", n)
        for i, p in enumerate(pinyins):
            if p[0] in "jqxJQX":
                p = re.sub(r"([jqx])[uü](n|e|an)*(\d)", r"\g<1>v\g<2>\g<3>", p, flags=re.IGNORECASE).upper()
            result = result.replace(f"<pinyin_{chr(ord('a') + i)}>", p)
        if tech:
            result = re.sub(r"\s*<H>\s*", "-", result)
        pattern = re.compile("|".join(re.escape(p) for p in UP_ZH_CHAR_REP_MAP))
        result = pattern.sub(lambda x: UP_ZH_CHAR_REP_MAP[x.group()], result)
    else:
        try:
            text = re.sub(UP_CONTRACTION, r"\1 is", text, flags=re.IGNORECASE)
            tech = _up_order(re.findall(UP_TECH, text))
            replaced = text
            for term in tech:
                replaced = replaced.replace(term, term.replace("-", "<H>"))
            result = en_normalizer.normalize(replaced)
            if tech:
                result = re.sub(r"\s*<H>\s*", "-", result)
        except Exception:
            result = text
        pattern = re.compile("|".join(re.escape(p) for p in UP_CHAR_REP_MAP))
        result = pattern.sub(lambda x: UP_CHAR_REP_MAP[x.group()], result)
    for key, value in placeholders.items():
        result = result.replace(key, value)
    return result


def up_tokenize_by_cjk_char(line: str) -> str:
    """Upstream `indextts/utils/common.py` `tokenize_by_CJK_char`."""
    chars = re.split(r"([\u1100-\u11ff\u2e80-\ua4cf\ua840-\uD7AF\uF900-\uFAFF\uFE30-\uFE4F\uFF65-\uFFDC"
                     r"\U00020000-\U0002FFFF])", line.strip())
    return " ".join(w.strip().upper() for w in chars if w.strip())


def weTextProcessing_normalizers(cache_dir: Path):
    """Upstream's Linux `TextNormalizer.load()`: its own zh cache with interjections and erhua kept."""
    from tn.chinese.normalizer import Normalizer as NormalizerZh
    from tn.english.normalizer import Normalizer as NormalizerEn

    zh = NormalizerZh(cache_dir=str(cache_dir), remove_interjections=False, remove_erhua=False,
                      overwrite_cache=False)
    return zh, NormalizerEn(overwrite_cache=False)


def _language(text: str) -> str:
    cjk = re.search("[\u4e00-\u9fff]", text) is not None
    latin = re.search("[A-Za-zＡ-Ｚａ-ｚ]", text) is not None
    return "mixed" if cjk and latin else ("zh" if cjk else "en")


def record(cache_dir: Path) -> None:
    """Recompute language, path, expected and ours for every row of the corpus (keeps category and input)."""
    zh, en = weTextProcessing_normalizers(cache_dir)
    rows = read_corpus()
    for row in rows:
        text = row["input"]
        row["language"] = _language(text)
        row["path"] = "zh" if up_use_chinese(_up_protect_annotations(text)[0]) else "en"
        row["expected"] = upstream_normalize(text, zh, en)
        row["ours"] = normalize(text)
    write_corpus(rows)
    agree = sum(row["expected"] == row["ours"] for row in rows)
    print(f"{len(rows)} rows, {agree} agree; set AGREEING, ROWS = {agree}, {len(rows)}")


# --- normalisation: the corpus ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus() -> list[dict[str, str]]:
    return read_corpus()


def test_corpus_shape(corpus):
    assert len(corpus) == ROWS >= 150 + UPSTREAM_EXAMPLES
    assert {row["category"] for row in corpus} == CATEGORIES
    assert {row["language"] for row in corpus} == {"zh", "en", "mixed"}
    assert sum(row["category"] == "upstream_example" for row in corpus) == UPSTREAM_EXAMPLES
    inputs = [row["input"] for row in corpus]
    assert len(set(inputs)) == len(inputs), "duplicate inputs"
    for row in corpus:
        assert row["language"] == _language(row["input"]), row
        assert row["path"] == ("zh" if up_use_chinese(_up_protect_annotations(row["input"])[0]) else "en"), row


def test_corpus_reads_as_recorded(corpus):
    """`normalize` gives the recorded `ours` for every row: a row that agreed with upstream and now differs
    fails here, and so does a known difference that starts agreeing (its `ours` is not `expected`)."""
    wrong = [(row["input"], row["ours"], got) for row in corpus if (got := normalize(row["input"])) != row["ours"]]
    assert not wrong, "\n".join(f"{i!r}: recorded {o!r}, now {g!r}" for i, o, g in wrong)


def test_agreement_with_upstream_linux_path(corpus):
    agreeing = [row for row in corpus if row["ours"] == row["expected"]]
    assert (len(agreeing), len(corpus)) == (AGREEING, ROWS)
    differing = {row["category"] for row in corpus if row["ours"] != row["expected"]}
    # wetext vs WeTextProcessing: English readings, `"`/`\\` escapes, leading spaces (README)
    assert differing == {"upstream_example", "decimal", "money", "date", "phone", "range", "plus", "email",
                         "abbreviation", "quote", "whitespace", "plain"}, differing


def test_wetext_version_is_the_tested_one():
    from importlib.metadata import version

    assert version("wetext") == WETEXT_TESTED, "re-record the corpus (module docstring) and update README"


def test_issue_examples():
    """Upstream's readings quoted in the project's issue, now given by wetext."""
    assert normalize("It costs $3.99.") == "It costs three point nine nine dollars."
    assert normalize("See you at 8:00 AM") == "See you at eight AM"
    assert normalize("01月的天气很冷") == "零一月的天气很冷"
    assert normalize("About 3/4 of people agree.") == "About three quarters of people agree."
    assert normalize("Dr. Brown will see you.") == "doctor Brown will see you."
    assert normalize("It is 38°C today.") == "It is thirty eight degrees Celsius today."


def test_expected_column_is_upstream_on_linux(corpus, tmp_path_factory):
    """`expected` recomputed live from WeTextProcessing through upstream's routing; the runtime's own
    routing around the same normalisers gives the same strings (all differences are wetext's)."""
    pytest.importorskip("tn.chinese.normalizer", reason="WeTextProcessing (pynini) is not installed: the "
                        "`tn-reference` extra; the recorded `expected` column is checked without it")
    zh, en = weTextProcessing_normalizers(tmp_path_factory.mktemp("tn_zh_cache"))
    wrong = []
    for row in corpus:
        reference = upstream_normalize(row["input"], zh, en)
        routed = normalize_with(row["input"], zh.normalize, en.normalize)
        if not reference == routed == row["expected"]:
            wrong.append((row["input"], row["expected"], reference, routed))
    assert not wrong, "\n".join(f"{w[0]!r}: recorded {w[1]!r}, upstream {w[2]!r}, routed {w[3]!r}" for w in wrong)


def test_upstream_examples_tokenize_as_upstream(corpus, tok):
    """front.py's `__main__` sentences: the runtime's pieces are upstream's (`tokenize_by_CJK_char` then
    SentencePiece) on the recorded strings; where wetext reads differently the pieces differ there only."""
    examples = [row for row in corpus if row["category"] == "upstream_example"]
    assert len(examples) == UPSTREAM_EXAMPLES
    same = 0
    for row in examples:
        pieces = tokenize_pieces(row["input"], tok.sp)
        assert pieces == tok.sp.encode(up_tokenize_by_cjk_char(row["ours"]), out_type=str)
        upstream = tok.sp.encode(up_tokenize_by_cjk_char(row["expected"]), out_type=str)
        assert (pieces == upstream) == (row["ours"] == row["expected"]), row["input"]
        same += pieces == upstream
    assert same == sum(row["ours"] == row["expected"] for row in examples)


def test_pinyin_pattern_rejects_upstreams_bad_cases():
    # front.py `__main__`: these must not match PINYIN_TONE_PATTERN (re.match) ...
    for bad in ("beta1", "better1", "voice2", "bala2", "babala2", "hunger2"):
        assert PINYIN_TONE.match(bad) is None, bad
        assert re.match(UP_PINYIN, bad, re.IGNORECASE) is None
    # ... and the docstring's examples must
    for good in ("xuan4", "jve2", "ying1", "zhong4", "shang5", "er2", "ng5", "lüe4"):
        assert PINYIN_TONE.fullmatch(good) and re.fullmatch(UP_PINYIN, good, re.IGNORECASE), good


# --- normalisation: upstream's routing around the number readers (no FST needed) ----------------------


class Recorder:
    """A stand-in normaliser: records what it is given, returns it unchanged (or raises)."""

    def __init__(self, fail: bool = False):
        self.seen: list[str] = []
        self.fail = fail

    def __call__(self, text: str) -> str:
        self.seen.append(text)
        if self.fail:
            raise RuntimeError("no path")
        return text


class Engine:
    """An object with a `normalize` method, as upstream holds its normalisers."""

    def __init__(self, fail: bool = False):
        self.normalize = Recorder(fail)


def test_routing():
    # upstream `use_chinese`: CJK, or no Latin letter, or an e-mail, or pinyin with a tone digit
    assert use_chinese("你好 hello") and use_chinese("123, 456") and use_chinese("abc@def.com")
    assert use_chinese("zhong4 yao4") and use_chinese("go2")  # "go" passes upstream's pinyin pattern
    assert not use_chinese("have you ever been to beta2?")  # a letter precedes the syllable: not pinyin
    assert not use_chinese("abc@def.com and more")


@pytest.mark.parametrize(("text", "engine", "sent", "out"), [
    # tech terms: hyphens held as <H>, spaces around them dropped on the way back
    ("GPT-5-Nano 是 GPT-5 模型", "zh", "GPT<H>5<H>Nano 是 GPT<H>5 模型", "GPT-5-Nano 是 GPT-5 模型"),
    ("GPT-5-Nano is small", "en", "GPT<H>5<H>Nano is small", "GPT-5-Nano is small"),
    # pinyin: longest first; j/q/x + u restored as V, upper-cased
    ("晕XUAN4是一种GAN3觉", "zh", "晕<pinyin_a>是一种<pinyin_b>觉", "晕XVAN4是一种GAN3觉"),
    ("最ju4要", "zh", "最<pinyin_a>要", "最JV4要"),
    # names (`·` kept from the normaliser, mapped to `-` afterwards), full-width brackets mapped
    ("约瑟夫·高登-莱维特（Joseph Gordon-Levitt）", "zh", "<n_a>（Joseph Gordon<H>Levitt）",
     "约瑟夫-高登-莱维特'Joseph Gordon-Levitt'"),
    # annotations: letter-only placeholders through everything, restored last
    ("读<行|xing2>123", "zh", "读PRONPLACEHOLDERaPRONPLACEHOLDER123", "读<行|xing2>123"),
    ("I <read|red> it", "en", "I PRONPLACEHOLDERaPRONPLACEHOLDER it", "I <read|red> it"),
    # contractions without a word boundary (upstream at the pinned commit), right strip on zh only
    ("这是rabbit's皮毛。  ", "zh", "这是rabbit is皮毛。", "这是rabbit is皮毛."),
    ("where's it's  ", "en", "where is it is  ", "where is it is  "),
    # the zh map adds `$` -> `.`; `...` -> `…`; `:` -> `,`
    ('价格$5: "好"...', "zh", '价格$5: "好"...', "价格.5, '好'…"),
    ('cost $5: "ok"...', "en", 'cost $5: "ok"...', "cost $5, 'ok'…"),
])
def test_routing_around_the_normalisers(text, engine, sent, out):
    zh, en = Recorder(), Recorder()
    assert normalize_with(text, zh, en) == out
    assert (zh.seen, en.seen) == (([sent], []) if engine == "zh" else ([], [sent]))
    assert upstream_normalize(text, Engine(), Engine()) == out  # the transcription agrees


def test_normaliser_failure_as_upstream(caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert normalize_with("你好123", Recorder(fail=True), Recorder()) == ""  # zh: empty
        assert normalize_with("it's 3000+ (ok)", Recorder(), Recorder(fail=True)) == "it is 3000+ 'ok'"
    assert len(caplog.records) == 2 and "RuntimeError" in caplog.text


def test_normalisers_load_once_on_first_use(monkeypatch):
    made = []

    class FakeWetext:
        class Normalizer:
            def __init__(self, **kwargs):
                made.append(kwargs)

    monkeypatch.setattr(text_module, "_loaded", None)
    monkeypatch.setitem(sys.modules, "wetext", FakeWetext)
    got = []
    threads = [threading.Thread(target=lambda: got.append(text_module._normalizers())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 2 and len({id(g) for g in got}) == 1
    assert made == [{"lang": "zh", "operator": "tn", "remove_erhua": False, "remove_interjections": False,
                     "traditional_to_simple": True, "full_to_half": True}, {"lang": "en", "operator": "tn"}]


def test_import_does_not_load_wetext():
    code = ("import sys; import indextts2_onnx.runtime.text as t; assert 'wetext' not in sys.modules; "
            "t.normalize('1'); assert 'wetext' in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# --- CJK spacing, one-character rule ----------------------------------------------------------------


def test_cjk_split_upper():
    assert cjk_split_upper("你好 world!") == "你 好 WORLD!"
    # runs are trimmed at their ends only; Hangul is split too; the full-width comma is not a CJK block
    assert cjk_split_upper("  a你b  hello  there 안녕 你，好") == "A 你 B  HELLO  THERE 안 녕 你 ， 好"
    for line in ("你好 world!", "  a你b  hello  there 안녕 你，好", "ＡＢＣ公司 ｈｉ", "𠀀x 。y"):
        assert cjk_split_upper(line) == up_tokenize_by_cjk_char(line)


def test_one_character_skips_normalisation(tok):
    assert tokenize_pieces("5", tok.sp) == ["\u2581", "5"]  # not read as 五
    assert tokenize_pieces(" a ", tok.sp) == tok.sp.encode(" a ", out_type=str)  # not upper-cased
    assert "5" not in tokenize_pieces("55", tok.sp) and "五" in tokenize_pieces("55", tok.sp)
    assert tokenize_pieces("", tok.sp) == []


# --- Tokenizer --------------------------------------------------------------------------------------


def test_tokenizer_ids(tok, bpe_bytes, tmp_path):
    text = "HELLO THERE, IT IS A TEST. 你好, 我们的国家! 123"
    segs = tok.segments(text)
    ids = [i for seg in segs for i in seg]
    assert ids and all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids)
    assert 0 not in ids and 1 not in ids  # <s> and </s> never come from text
    assert ids == [tok.sp.piece_to_id(p) for p in tok.pieces(text)]
    assert [len(s) for s in tok.segments(text, max_tokens_per_segment=10)] != [len(ids)]
    path = tmp_path / "bpe.model"
    path.write_bytes(bpe_bytes)
    assert Tokenizer.load(path).segments(text) == segs
    with pytest.raises(FileNotFoundError):
        Tokenizer.load(tmp_path / "missing.model")


def test_unknown_pieces_warned_once(tok, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ids = [i for seg in tok.segments("HELLO 世界 ÿ THERE") for i in seg]
    assert tok.unk_id in ids
    warnings = [r.getMessage() for r in caplog.records if "unknown" in r.getMessage()]
    assert len(warnings) == 1 and "世" in warnings[0] and "界" in warnings[0] and "Ÿ" in warnings[0]


@pytest.mark.parametrize("bad", ["", "   \n", "\u200b\u200b", "é ÿ", None])
def test_bad_input(tok, bad):
    with pytest.raises(InputError):
        tok.segments(bad)


def test_too_long(bpe_bytes):
    short = Tokenizer.load(bpe_bytes, max_chars=10)
    assert short.segments("HELLO THERE"[:10])
    with pytest.raises(InputError, match="limit of 10.*max_chars"):
        short.segments("HELLO THERE")


def test_text_front_end_is_torch_free(bpe_bytes, tmp_path):
    path = tmp_path / "bpe.model"
    path.write_bytes(bpe_bytes)
    script = textwrap.dedent(f"""
        import sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "torch":
                    raise ImportError("torch imported: " + name)
        sys.meta_path.insert(0, NoTorch())
        from indextts2_onnx.runtime.text import Tokenizer
        print(len(Tokenizer.load({str(path)!r}).segments("HELLO 你好. 12:30")))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


if __name__ == "__main__":
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description="re-record tests/data/text_normalization.tsv")
    parser.add_argument("--record", action="store_true", required=True)
    parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        record(Path(cache))
