"""IndexTTS-2.5's torch-free text front end (runtime/multilingual.py, indextts25.md §2 and §9) on random
tiktoken vocabularies from export/tiktoken_vocab.py: the special-token table, language ids and prefixes,
the clean map, normalisation routing, case, annotations (with the Japanese marker quirk), the token-budget
splitter and the input checks. The expected strings are upstream's documented behaviour."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
import textwrap

import pytest

from indextts2_onnx.export import tiktoken_vocab
from indextts2_onnx.export.tiktoken_vocab import gpt2_byte_order, tiktoken_vocabulary
from indextts2_onnx.runtime.errors import InputError
from indextts2_onnx.runtime.multilingual import (
    LANGUAGES,
    LANGUAGES_25,
    N_SPECIALS,
    TIKTOKEN_FILE,
    MultilingualTokenizer,
    lang_to_token,
    parse_ranks,
    split_by_tokens,
)

N = 1000  # the tiny checkpoint's size
SPECIAL_1, SPECIAL_2 = N + 122, N + 123
PREFIX_TOKEN = {"en": N + 2, "zh": N + 3, "es": N + 5, "ja": N + 9, "ar": N + 15}
SAMPLE = {"en": "Hello world.", "zh": "你好。", "ja": "こんにちは", "es": "Hola.", "ar": "مرحبا", "zhen": "你好 world"}


@pytest.fixture(scope="module")
def vocab() -> bytes:
    return tiktoken_vocabulary(N)


@pytest.fixture(scope="module")
def tok(vocab) -> MultilingualTokenizer:
    return MultilingualTokenizer.load(vocab)


def body(tok: MultilingualTokenizer, ids: list[int], lang: str) -> str:
    """A segment's text: its ids decoded, the prefix taken off."""
    text = tok.encoding.decode(ids)
    assert text.startswith(tok.prefix(lang))
    return text[len(tok.prefix(lang)):]


# --- special tokens and language ids ------------------------------------------------------------------


def test_special_ids_follow_the_rank_count(tok):
    assert (tok.n_ranks, tok.n_vocab, N_SPECIALS) == (N, N + 1673, 1673)
    s = tok.specials
    assert s["<|endoftext|>"] == N and s["<|startoftranscript|>"] == N + 1
    assert {lang: s[f"<|{lang}|>"] for lang in PREFIX_TOKEN} == PREFIX_TOKEN
    assert s["<|su|>"] == N + 2 + 98 and "<|yue|>" not in s and "<|zhen|>" not in s  # first 99 languages
    assert s["<|ASR|>"] == N + 101 and s["<|HAPPY|>"] == N + 112 and s["<|translate|>"] == N + 116
    assert (s["<|SPECIAL_TOKEN_1|>"], s["<|SPECIAL_TOKEN_2|>"], s["<|SPECIAL_TOKEN_30|>"]) == (SPECIAL_1, SPECIAL_2,
                                                                                              N + 151)
    assert s["<|TTS/B|>"] == N + 152 and s["<|TTS/SP13|>"] == N + 171
    assert s["<|0.00|>"] == N + 172 and s["<|0.02|>"] == N + 173 and s["<|30.00|>"] == tok.n_vocab - 1


def test_official_size_matches_the_config():
    tok = MultilingualTokenizer.load(tiktoken_vocabulary(58_836))
    assert tok.n_vocab == 60_509  # config gpt.number_text_tokens
    assert tok.specials["<|endoftext|>"] == 58_836 and tok.specials["<|en|>"] == 58_838
    assert tok.specials["<|SPECIAL_TOKEN_1|>"] == 58_958 and tok.specials["<|SPECIAL_TOKEN_2|>"] == 58_959
    assert [tok.specials[f"<|{lang}|>"] for lang in ("zh", "es", "ja", "ar")] == [58_839, 58_841, 58_845, 58_851]


def test_language_ids():
    assert len(LANGUAGES) == 106 and LANGUAGES[-1] == "common"
    tok_ids = {lang: lang_to_token(lang) for lang in LANGUAGES_25}
    assert tok_ids == {"en": 0, "zh": 1, "ja": 7, "es": 3, "ar": 13, "zhen": 105}
    assert lang_to_token("yue") == 99 and lang_to_token("zh/en") == 103 and lang_to_token("xx") == 105


@pytest.mark.parametrize("lang", LANGUAGES_25)
def test_prefix_comes_first(tok, lang):
    segs = tok.segments(SAMPLE[lang], lang)
    assert len(segs) == 1
    assert tok.language_id(lang) == lang_to_token(lang)
    if lang == "zhen":  # plain text: `<|zhen|>` is no special token
        prefix_ids = tok.encode("<|zhen|>")
        assert segs[0][:len(prefix_ids)] == prefix_ids and all(i < N for i in segs[0])
    else:
        assert segs[0][0] == PREFIX_TOKEN[lang] and all(i < N for i in segs[0][1:])
    assert segs[0] == tok.encode(tok.prefix(lang) + tok.prepare(SAMPLE[lang], lang))


# --- clean map, normalisation, case -------------------------------------------------------------------------


def test_full_width_bang_becomes_id_0(tok):
    assert tok.prepare("你好！", "zh") == "你好!"
    assert tok.segments("你好！", "zh")[0][-1] == 0  # `!`: the GPT input drops it (DROPPED_IDS)
    assert 1 not in tok.segments('He said "hi"', "en", normalize=False)[0]  # `"` is already `'`


def test_clean_map_runs_before_normalisation(tok):
    assert tok.prepare("8:00", "en", normalize=False) == "8,00"
    assert tok.prepare("8:00 AM", "en") == "eight,zero am"
    assert tok.prepare("20:00", "zh") == "二十,零零"
    assert tok.prepare("他说“你好”（真的）\n再见", "zh", normalize=False) == "他说'你好''真的' 再见"
    assert tok.prepare("Wait...", "ar") == "Wait…"


def test_normalisation_routing_and_case(vocab, tok, caplog):
    assert tok.prepare("2024年", "zh") == "二零二四年"
    assert tok.prepare("2024年", "zh", normalize=False) == "2024年"
    assert tok.prepare("I have 3 Apples", "en") == "i have three apples"
    assert tok.prepare("我爱 Python 3", "zhen") == "我爱 python 三"
    assert tok.prepare("今日は8時です", "ja") == "今日 は 8 時 です"  # no normalisation: digits stay
    assert tok.prepare("مرحبا ABC 123", "ar") == "مرحبا ABC 123"  # none, and the case as is
    if importlib.util.find_spec("nemo_text_processing") is None:
        fresh = MultilingualTokenizer.load(vocab)
        with caplog.at_level(logging.WARNING, "indextts2_onnx.runtime.multilingual"):
            assert fresh.prepare("Hola, señor 5", "es") == "HOLA, SEÑOR 5"  # upper, NeMo absent: as is
            assert fresh.prepare("Adiós", "es") == "ADIÓS"
        assert len([r for r in caplog.records if "NeMo" in r.message]) == 1  # logged once
    assert tok.prepare("Hola, señor 5", "es", normalize=False) == "HOLA, SEÑOR 5"


# --- annotations ------------------------------------------------------------------------------------------


def test_pinyin_annotation_is_a_special_token_2_span(tok):
    assert tok.prepare("<行|xing2>走", "zh") == "<|SPECIAL_TOKEN_2|>XING2<|SPECIAL_TOKEN_2|>走"  # not XING二
    ids = tok.segments("<行|xing2>走", "zh")[0]
    assert ids[:3] == [PREFIX_TOKEN["zh"], tok.encode(" ")[0], SPECIAL_2] and ids.count(SPECIAL_2) == 2


def test_cmu_annotation_is_a_special_token_1_span(tok):
    assert tok.prepare("I'm <going|G OW1 . IH0 NG>", "en") == \
        "i'm <|SPECIAL_TOKEN_1|>G OW1 . IH0 NG<|SPECIAL_TOKEN_1|>"
    assert tok.segments("<going|g ow1>", "en")[0].count(SPECIAL_1) == 2
    assert tok.prepare("<hola|o l a>", "es") == "<|SPECIAL_TOKEN_1|>O L A<|SPECIAL_TOKEN_1|>"
    assert tok.prepare("<word|とウ>", "en") == "<|SPECIAL_TOKEN_1|>とウ<|SPECIAL_TOKEN_1|>"  # mixed kana


def test_kana_annotation_is_plain_text(tok):
    assert tok.prepare("<东|とう>", "zh") == " とう "
    assert tok.prepare("<東京|とうきょう>に行く", "ja") == " とうきょう に 行く"
    assert tok.prepare("<東京|トウキョウ>", "ar") == " トウキョウ "


def test_japanese_mecab_splits_annotation_markers(tok):
    # upstream quirk (indextts25.md §9): MeCab runs after the annotation step and cuts the marker
    assert tok.prepare("<going|G OW1>", "ja") == \
        "< | SPECIAL _ TOKEN _ 1 | > G OW 1 < | SPECIAL _ TOKEN _ 1 | >"
    assert tok.prepare("<行|xing2>", "ja") == "< | SPECIAL _ TOKEN _ 2 | > XING 2 < | SPECIAL _ TOKEN _ 2 | >"
    ids = tok.segments("<going|G OW1>", "ja")[0]
    assert SPECIAL_1 not in ids and ids[0] == PREFIX_TOKEN["ja"]


def test_user_typed_language_token_is_upper_cased(tok):
    assert tok.prepare("say <|en|> now", "en", normalize=False) == "say <|EN|> now"
    assert tok.segments("say <|en|> now", "en", normalize=False)[0].count(PREFIX_TOKEN["en"]) == 1


# --- the splitter -----------------------------------------------------------------------------------------


def test_split_by_tokens_rules():
    assert split_by_tokens("abc. def", 10, len) == ["abc. def"]  # fits whole
    assert split_by_tokens("aaaa. bbbb, cccc", 7, len) == ["aaaa.", " bbbb,", " cccc"]  # after punctuation
    assert split_by_tokens("a. b. c.", 5, len) == ["a. b.", " c."]  # greedy merge
    assert split_by_tokens("abcdefghij", 4, len) == ["abcd", "efgh", "ij"]  # over budget: by character
    assert split_by_tokens("你好，世界。再见", 3, len) == ["你好，", "世界。", "再见"]
    span = "<|SPECIAL_TOKEN_1|>A B. C<|SPECIAL_TOKEN_1|>"
    assert split_by_tokens(f"xx{span}yy", 10, len) == ["xx", span, "yy"]  # whole, even over budget


def test_segments_respect_the_budget(tok):
    text = "The quick brown fox jumps over the lazy dog, then it runs away. " * 3
    segs = tok.segments(text, "en", max_tokens_per_segment=12)
    bodies = [body(tok, ids, "en") for ids in segs]
    assert len(segs) > 3 and "".join(bodies) == tok.prepare(text, "en")
    budget = 12 - len(tok.encode("<|en|> "))  # 10: the prefix counts
    assert all(len(tok.encode(b)) <= budget for b in bodies)
    assert all(ids[0] == PREFIX_TOKEN["en"] for ids in segs)


def test_budget_counts_the_zhen_prefix(tok):
    k = len(tok.encode("<|zhen|> "))  # plain text: several tokens
    assert k == 8 and [len(tok.encode(c)) for c in "你好世界再见"] == [1, 1, 2, 3, 2, 3]
    segs = tok.segments("你好世界再见", "zhen", max_tokens_per_segment=k + 3)  # budget 3 besides the prefix
    assert [body(tok, ids, "zhen") for ids in segs] == ["你好", "世", "界", "再", "见"]


def test_budget_floor_and_cap(vocab):
    tok = MultilingualTokenizer(parse_ranks(vocab), max_text_tokens=6)  # cap: budget min(120, 6) - 2 = 4
    assert [body(tok, ids, "zh") for ids in tok.segments("你好你好你好", "zh")] == ["你好你好", "你好"]
    tok = MultilingualTokenizer(parse_ranks(vocab))
    assert [body(tok, ids, "zh") for ids in tok.segments("你好", "zh", max_tokens_per_segment=1)] == ["你", "好"]


def test_special_spans_stay_whole(tok):
    span = "<|SPECIAL_TOKEN_2|>XING2<|SPECIAL_TOKEN_2|>"  # 7 tokens, over the budget of 6 - 2
    segs = tok.segments("走<行|xing2>走<行|xing2>走", "zh", max_tokens_per_segment=6)
    assert [body(tok, ids, "zh") for ids in segs] == ["走", span, "走", span, "走"]
    assert [ids.count(SPECIAL_2) for ids in segs] == [0, 2, 0, 2, 0]


# --- errors -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["fr", "EN", "yue", "common", ""])
def test_unknown_language(tok, lang):
    with pytest.raises(InputError, match="unknown language") as e:
        tok.segments("hello", lang)
    assert "en, zh, ja, es, ar, zhen" in e.value.hint
    with pytest.raises(InputError):
        tok.language_id(lang)


def test_bad_text(vocab, tok):
    for text in ("", "   ", "\n\n"):
        with pytest.raises(InputError, match="empty"):
            tok.segments(text, "en")
    with pytest.raises(InputError, match="nothing speakable"):
        tok.segments("！", "zh")  # `!` alone: id 0, which the GPT drops
    with pytest.raises(InputError, match="more than the limit of 10"):
        MultilingualTokenizer.load(vocab, max_chars=10).segments("a" * 11, "en")
    with pytest.raises(InputError, match="must be a str"):
        tok.segments(b"hello", "en")
    with pytest.raises(InputError, match="max_tokens_per_segment"):
        tok.segments("hello", "en", max_tokens_per_segment=0)


def test_japanese_without_the_extra(vocab, monkeypatch):
    tok = MultilingualTokenizer.load(vocab)
    monkeypatch.setitem(sys.modules, "fugashi", None)  # import fugashi -> ImportError
    with pytest.raises(InputError, match="MeCab") as e:
        tok.segments("こんにちは", "ja")
    assert e.value.hint == 'pip install "indextts2-onnx[ja]"'
    assert tok.segments("hello", "en")  # other languages do not need it


def test_bad_rank_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=TIKTOKEN_FILE):
        MultilingualTokenizer.load(tmp_path / TIKTOKEN_FILE)
    with pytest.raises(InputError, match="line 1"):
        MultilingualTokenizer.load(b"not-base64 zero\n")
    with pytest.raises(InputError, match="not 0..1"):
        MultilingualTokenizer.load(b"IQ== 0\nIg== 2\n")
    with pytest.raises(InputError, match="every single byte"):
        MultilingualTokenizer.load(b"IQ== 0\nIg== 1\n")
    path = tmp_path / TIKTOKEN_FILE
    path.write_bytes(tiktoken_vocabulary(300))
    assert MultilingualTokenizer.load(path).n_vocab == 300 + 1673


# --- the random vocabulary ----------------------------------------------------------------------------------


def test_vocabulary_layout(vocab):
    ranks = parse_ranks(vocab)
    by_rank = sorted(ranks, key=ranks.get)
    assert len(by_rank) == N and by_rank[:2] == [b"!", b'"']
    assert by_rank[:256] == [bytes([b]) for b in gpt2_byte_order()] and len(set(gpt2_byte_order())) == 256
    assert tiktoken_vocabulary(N) == vocab and tiktoken_vocabulary(N, seed=1) != tiktoken_vocabulary(2000)
    assert tiktoken_vocabulary(3000, seed=1) != tiktoken_vocabulary(3000, seed=2)
    assert [len(parse_ranks(tiktoken_vocabulary(n))) for n in (256, 257, 5000)] == [256, 257, 5000]
    with pytest.raises(ValueError):
        tiktoken_vocabulary(255)


def test_every_token_is_reachable_and_languages_are_covered(vocab, tok):
    # tiktoken's merges alone (no pre-tokenizer) turn each token's bytes back into that one token
    assert all(tok.encoding._encode_bytes(t) == [r] for t, r in parse_ranks(vocab).items())
    for word in ("你", "好", "あ", "ア", "م", "ñ", "É", "¿", " the"):
        assert len(tok.encode(word)) == 1, word


def test_filler_when_targets_run_out(monkeypatch):
    monkeypatch.setattr(tiktoken_vocab, "_targets", lambda seed: iter([b"ab", "你".encode()]))
    ranks = parse_ranks(tiktoken_vocabulary(264))
    by_rank = sorted(ranks, key=ranks.get)
    assert by_rank[256:260] == [b"ab", b"\xe4\xbd", "你".encode(), b"\xff\xfe\x00\x00\x00\x00"]
    assert len(ranks) == 264


def test_no_torch():
    script = textwrap.dedent("""
        import sys
        from indextts2_onnx.export.tiktoken_vocab import tiktoken_vocabulary
        from indextts2_onnx.runtime.multilingual import MultilingualTokenizer
        tok = MultilingualTokenizer.load(tiktoken_vocabulary(1000))
        assert tok.segments("今日は", "ja") and tok.segments("你好", "zh")
        assert "torch" not in sys.modules, "torch imported"
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
