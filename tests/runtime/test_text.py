"""The torch-free text front end: normalisation, CJK spacing, SentencePiece pieces, upstream's segmenting
rule (architecture.md §3.5) and the Tokenizer's checks."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
import textwrap

import pytest

from indextts2_onnx.runtime.errors import InputError
from indextts2_onnx.runtime.text import (
    Tokenizer,
    cjk_split_upper,
    en_cardinal,
    normalize,
    split_segments,
    tokenize_pieces,
    use_chinese,
    zh_cardinal,
)

from conftest import REPO  # noqa: E402
LOGGER = "indextts2_onnx.runtime.text"


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


# --- CJK spacing, one-character rule ----------------------------------------------------------------


def test_cjk_split_upper():
    assert cjk_split_upper("你好 world!") == "你 好 WORLD!"
    # runs are trimmed at their ends only; Hangul is split too; the full-width comma is not a CJK block
    assert cjk_split_upper("  a你b  hello  there 안녕 你，好") == "A 你 B  HELLO  THERE 안 녕 你 ， 好"


def test_one_character_skips_normalisation(tok):
    assert tokenize_pieces("5", tok.sp) == ["\u2581", "5"]  # not read as 五
    assert tokenize_pieces(" a ", tok.sp) == tok.sp.encode(" a ", out_type=str)  # not upper-cased
    assert "5" not in tokenize_pieces("55", tok.sp) and "五" in tokenize_pieces("55", tok.sp)
    assert tokenize_pieces("", tok.sp) == []


# --- normalisation ----------------------------------------------------------------------------------


def test_routing():
    # upstream `use_chinese`: CJK, or no Latin letter, or an e-mail, or pinyin with a tone digit
    assert use_chinese("你好 hello") and use_chinese("123, 456") and use_chinese("abc@def.com")
    assert use_chinese("zhong4 yao4") and use_chinese("go2")  # "go" passes upstream's pinyin pattern
    assert not use_chinese("have you ever been to beta2?")  # a letter precedes the syllable: not pinyin


def test_cardinals():
    zh = {0: "零", 10: "十", 15: "十五", 105: "一百零五", 110: "一百一十", 1005: "一千零五",
          1050: "一千零五十", 12999: "一万二千九百九十九", 100000: "十万", 100010000: "一亿零一万"}
    assert {n: zh_cardinal(n) for n in zh} == zh
    assert en_cardinal(0) == "zero"
    assert en_cardinal(105) == "one hundred and five"
    assert en_cardinal(1234) == "one thousand two hundred and thirty four"
    assert en_cardinal(2000001) == "two million one"


# Expected strings: upstream's own examples (front.py `__main__` cases and comments) where it gives them,
# otherwise derived from the rules stated in runtime/text.py's docstring.
EN_CASES = {
    "where's the money?": "where is the money?",  # upstream comment
    "have you ever been to beta2?": "have you ever been to beta two?",  # upstream comment
    "This sales for 2.5% off, only $12.5.":
        "This sales for two point five percent off, only twelve dollars and fifty cents.",
    "It costs $1.01 at 3:05": "It costs one dollar and one cent at three oh five",
    "See you at 8:00 AM": "See you at eight o'clock AM",
    "the 1st and 22nd, -3 and 1,234.5 or 007":
        "the first and twenty second, minus three and one thousand two hundred and thirty four point five "
        "or zero zero seven",
    "Couting down 3, 2, 1, go!": "Couting down three, two, one, go!",
    'He said "wait...": (yes) [no]; ok~': "He said 'wait…', 'yes' 'no', ok-",
    "GPT-5-Nano is small": "GPT-five-Nano is small",  # upstream comment: GPT-five-Nano
}

ZH_CASES = {
    "IndexTTS 正式发布1.0版本了，效果666": "IndexTTS 正式发布一点零版本了,效果六百六十六",
    "2002年的第一场雪，下在了2003年": "二零零二年的第一场雪,下在了二零零三年",
    "现在是北京时间2025年01月11日 20:00": "现在是北京时间二零二五年一月十一日 二十点",
    "2025/09/08 IndexTTS-2 全球发布": "二零二五年九月八日 IndexTTS-二 全球发布",  # upstream comment
    "GPT-5-Nano 是 GPT-5 模型": "GPT-五-Nano 是 GPT-五 模型",  # upstream comment
    "这是1024元的手机，你要吗？": "这是一千零二十四元的手机,你要吗?",
    "数到3就开始：1、2、3": "数到三就开始,一,二,三",
    "最低售价仅 ¥12999": "最低售价仅 一万二千九百九十九元",
    "涨了2.5%，约3/4的人，-3度": "涨了百分之二点五,约四分之三的人,负三度",
    "气温-3度，GPT-5": "气温负三度,GPT-五",  # `-` after a CJK character is a minus, after a letter is not
    "12:30:05开始，8:05结束": "十二点三十分五秒开始,八点零五分结束",
    "这酒...里...有毒...": "这酒…里…有毒…",
    "只有,,,才是最好的": "只有…才是最好的",
    "“我爱你”的英语是“I love you”": "'我爱你'的英语是'I love you'",
    "《书》（注）【一】「二」——好～": "'书''注''一''二'--好-",
    "今天是个好日子 it's a good day": "今天是个好日子 it is a good day",  # upstream comment
    "受不liao3你了，最ju4要": "受不liao3你了,最JV4要",  # pinyin kept; j/q/x + u -> v, upper-cased
    "价格$": "价格.",  # zh_char_rep_map maps a bare $ to .
    "读<行|xing2>123": "读<行|xing2>一百二十三",  # pronunciation annotations untouched
}


@pytest.mark.parametrize("text", list(EN_CASES))
def test_english_normalisation(text):
    assert normalize(text) == EN_CASES[text]


@pytest.mark.parametrize("text", list(ZH_CASES))
def test_chinese_normalisation(text):
    assert normalize(text) == ZH_CASES[text]


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
