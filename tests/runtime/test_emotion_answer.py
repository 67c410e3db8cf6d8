"""parse_emotion_answer: upstream QwenEmotion's answer parsing (indextts/infer_v2.py), torch-free.

Expected vectors follow upstream's `inference` -> `convert` -> `normalize_content` (see the module
docstring); comments say where a value is an upstream quirk rather than an obvious reading."""

from __future__ import annotations

import json
import math
import random

import pytest

from indextts2_onnx.runtime.emotion_answer import (
    EMOTIONS_CN,
    EMOTIONS_EN,
    MELANCHOLIC_WORDS,
    SCORE_MAX,
    SCORE_MIN,
    ParsedEmotion,
    parse_emotion_answer,
)

CALM = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
PLAIN = "今天天气不错。"  # no melancholic word


def vec(**scores: float) -> tuple[float, ...]:
    """An 8-vector from English names: vec(happy=0.8) -> (0.8, 0, 0, 0, 0, 0, 0, 0)."""
    assert set(scores) <= set(EMOTIONS_EN)
    return tuple(float(scores.get(name, 0.0)) for name in EMOTIONS_EN)


def parse(answer: str, text: str = PLAIN) -> ParsedEmotion:
    return parse_emotion_answer(answer, text)


def test_public_constants():
    assert EMOTIONS_CN == ("高兴", "愤怒", "悲伤", "恐惧", "反感", "低落", "惊讶", "自然")
    assert EMOTIONS_EN == ("happy", "angry", "sad", "afraid", "disgusted", "melancholic", "surprised", "calm")
    assert set(MELANCHOLIC_WORDS) == {"低落", "melancholy", "melancholic", "depression", "depressed", "gloomy"}
    assert (SCORE_MIN, SCORE_MAX) == (0.0, 1.2)


def test_result_is_frozen():
    result = parse('{"高兴": 0.5}')
    with pytest.raises(AttributeError):
        result.parsed = False  # type: ignore[misc]


# --- clean JSON -------------------------------------------------------------------------------------

def test_clean_json_all_eight_keys_in_vector_order():
    answer = json.dumps(dict(zip(EMOTIONS_CN, (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8))), ensure_ascii=False)
    assert parse(answer) == ParsedEmotion((0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8), True)


def test_out_of_order_keys_are_reordered_and_missing_keys_are_zero():
    result = parse('{"自然": 0.2, "惊讶": 0.3, "高兴": 0.9}')
    assert result == ParsedEmotion(vec(happy=0.9, surprised=0.3, calm=0.2), True)


def test_ascii_escaped_chinese_keys():
    assert parse(json.dumps({"愤怒": 0.7})) == ParsedEmotion(vec(angry=0.7), True)  # "\u6124\u6012"


@pytest.mark.parametrize("value, expected", [
    (1.5, 1.2), (1.2, 1.2), (1.0, 1.0), (0.0, 0.0), (-0.3, 0.0), (-0.0, 0.0), (7, 1.2), (1, 1.0),
    (10 ** 30, 1.2), (-(10 ** 30), 0.0),
    ("true", 1.0), ("false", 0.0),  # bools are 0/1 to upstream's min()/max()
    ("1e999", 1.2),  # json gives inf; min(1.2, inf) = 1.2
])
def test_values_are_clamped(value, expected):
    result = parse('{"高兴": %s, "愤怒": 0.5}' % value)
    assert result == ParsedEmotion(vec(happy=expected, angry=0.5), True)
    assert all(type(v) is float for v in result.vector)


@pytest.mark.parametrize("answer", ['{"高兴": 0, "自然": 0}', '{"高兴": -1, "悲伤": -0.5}', '{"悲伤": 0.0}'])
def test_all_zero_or_negative_becomes_calm_and_counts_as_parsed(answer):
    assert parse(answer) == ParsedEmotion(CALM, True)


def test_calm_from_the_model_is_kept_as_is():
    assert parse('{"自然": 0.4}') == ParsedEmotion(vec(calm=0.4), True)


def test_unknown_extra_keys_are_ignored():
    assert parse('{"高兴": 0.6, "confidence": 0.99, "reason": "x"}') == ParsedEmotion(vec(happy=0.6), True)


def test_whitespace_around_json_is_fine():
    assert parse('\n\n  {"恐惧": 0.45}\n') == ParsedEmotion(vec(afraid=0.45), True)


# --- English keys: upstream reads only the Chinese keys as scores ---------------------------------

def test_english_score_keys_are_not_read():
    # convert() only does content.get(<Chinese key>): {"happy": 0.8} is all zero -> calm, and no key named
    assert parse('{"happy": 0.8, "sad": 0.2}') == ParsedEmotion(CALM, False)


def test_english_keys_beside_chinese_ones_are_ignored():
    assert parse('{"happy": 0.8, "悲伤": 0.2}') == ParsedEmotion(vec(sad=0.2), True)


# --- regex fallback ---------------------------------------------------------------------------------

@pytest.mark.parametrize("answer, expected", [
    # the full-width colon is no ":" for upstream's regex, so 悲伤：0.1 is not a pair
    ("高兴: 0.8, 悲伤：0.1", vec(happy=0.8)),
    ("高兴: 0.8, 悲伤: 0.1", vec(happy=0.8, sad=0.1)),
    ('{"高兴": 0.8, "愤怒": 0.1} 以上是结果', vec(happy=0.8, angry=0.1)),  # JSON + trailing garbage
    ('```json\n{"惊讶": 0.6}\n```', vec(surprised=0.6)),  # a fenced block is not JSON either
    ('"高兴" : 0.9,"愤怒":0.1', vec(happy=0.9, angry=0.1)),  # pairs without braces
    ("高兴:0.8 高兴:0.2", vec(happy=0.2)),  # a later pair wins (dict comprehension)
    ("悲伤: 1.", vec(sad=1.0)),
    ("高兴: .5", vec(happy=0.5)),
    ("高兴: 3", vec(happy=1.2)),  # clamped
    ("高兴: -0.5, 愤怒: 0.3", vec(angry=0.3)),  # "-" is not in [\d.]+: no 高兴 pair at all
    ("高兴: 1" + "0" * 400, vec(happy=1.2)),  # float() gives inf; clamped to 1.2
])
def test_regex_fallback(answer, expected):
    assert parse(answer) == ParsedEmotion(expected, True)


@pytest.mark.parametrize("answer", [
    "{高兴: 0.8}",  # "{" is allowed in the key, which becomes "{高兴": not an emotion
    "高兴=0.8",
    "happy: 0.8",
    "emotion: sad",  # no number, no pair; bare words are not labels outside JSON
    "悲伤",  # an unquoted label is not JSON, and the regex finds nothing
    "",
    "   ",
    "我觉得这段话很开心",
])
def test_regex_fallback_without_emotion_pairs_is_calm_unparsed(answer):
    assert parse(answer) == ParsedEmotion(CALM, False)


@pytest.mark.parametrize("answer", [
    "高兴: 1.2.3",
    "高兴: 0.8, 悲伤: 0.1.",  # a sentence-ending period makes "0.1." which float() rejects
    "x: .",
    "高兴: 0.8, note: ...",  # one bad pair spoils all: upstream's dict comprehension raises
])
def test_regex_number_float_rejects_is_unparsed(answer):
    assert parse(answer) == ParsedEmotion(CALM, False)


# --- melancholic swap -------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["A Gloomy morning", "I feel DEPRESSED", "melancholy", "Melancholic tune",
                                  "post-Depression era", "心情低落", "gLoOmY"])
def test_melancholic_words_swap_sad_and_melancholic(text):
    assert parse('{"悲伤": 0.9, "低落": 0.1, "高兴": 0.2}', text) == ParsedEmotion(
        vec(sad=0.1, melancholic=0.9, happy=0.2), True)


def test_swap_with_missing_keys_uses_zero():
    assert parse('{"悲伤": 0.9}', "so gloomy") == ParsedEmotion(vec(melancholic=0.9), True)
    assert parse('{"低落": 0.7}', "so gloomy") == ParsedEmotion(vec(sad=0.7), True)
    # neither present: both become 0.0, nothing else -> calm; the answer did name an emotion
    assert parse('{"高兴": 0.0}', "so gloomy") == ParsedEmotion(CALM, True)


def test_swap_applies_to_regex_pairs_too():
    assert parse("悲伤: 0.8, 惊讶: 0.2", "Gloomy") == ParsedEmotion(vec(melancholic=0.8, surprised=0.2), True)


def test_no_swap_without_a_melancholic_word():
    assert parse('{"悲伤": 0.9}', "sad but not that word") == ParsedEmotion(vec(sad=0.9), True)


def test_swap_on_an_answer_with_no_emotion_stays_unparsed():
    # upstream's swap inserts 悲伤 = 低落 = 0.0, giving calm; the answer itself named nothing
    assert parse("no idea", "gloomy") == ParsedEmotion(CALM, False)


# --- label-only answers -----------------------------------------------------------------------------

@pytest.mark.parametrize("answer, expected", [
    ('"悲伤"', vec(sad=1.0)),
    ('"Happy"', vec(happy=1.0)),
    ('"  ANGRY "', vec(angry=1.0)),  # stripped, case-insensitive
    ('" 自然 "', vec(calm=1.0)),
    ('"melancholic"', vec(melancholic=1.0)),
    ('{"emotion": "angry"}', vec(angry=1.0)),
    ('{"情感": "恐惧"}', vec(afraid=1.0)),
    ('{"情绪": "Disgusted"}', vec(disgusted=1.0)),
    ('{"emotion_label": "surprised", "confidence": 0.9}', vec(surprised=1.0)),
    ('{"label": "低落"}', vec(melancholic=1.0)),
    # the first alias holding a label wins, in upstream's order emotion, emotion_label, label, 情感, 情绪
    ('{"情绪": "高兴", "label": "sad"}', vec(sad=1.0)),
    ('{"emotion": "joyful", "label": "sad"}', vec(sad=1.0)),  # a non-label under an alias is skipped
])
def test_label_only_answers(answer, expected):
    assert parse(answer) == ParsedEmotion(expected, True)


def test_alias_label_is_ignored_when_a_score_key_is_present():
    # upstream applies the alias label only when no Chinese score key is in the answer
    assert parse('{"emotion": "angry", "高兴": 0.3}') == ParsedEmotion(vec(happy=0.3), True)
    assert parse('{"emotion": "angry", "高兴": 0}') == ParsedEmotion(CALM, True)


@pytest.mark.parametrize("answer, expected", [
    ('{"悲伤": "sad"}', vec(sad=1.0)),  # its own name -> 1.0
    ('{"高兴": "高兴", "愤怒": 0.2}', vec(happy=1.0, angry=0.2)),
    ('{"高兴": "sad"}', vec(sad=1.0)),  # another name: 0.0 here, 1.0 there
    ('{"悲伤": "happy", "高兴": 0.3}', vec(happy=1.0)),  # the rewrite overwrites 0.3
    # rewrites run in vector order on the updated dict: 高兴 -> 悲伤 = 1.0 first, so 悲伤's own label is gone
    ('{"高兴": "sad", "悲伤": "happy"}', vec(sad=1.0)),
])
def test_score_key_whose_value_is_a_label_is_rewritten(answer, expected):
    assert parse(answer) == ParsedEmotion(expected, True)


@pytest.mark.parametrize("answer", ['"joy"', '"neutral"', '{"emotion": "joyful"}', '{"label": 1}', '"x"', '{}'])
def test_unknown_labels_are_calm_unparsed(answer):
    assert parse(answer) == ParsedEmotion(CALM, False)


def test_label_order_with_the_melancholic_swap():
    # upstream swaps BEFORE normalising labels. The swap adds the score keys 悲伤 and 低落 (0.0), so an
    # alias label no longer applies: {"emotion": "sad"} on a gloomy text is calm, not melancholic.
    assert parse('{"emotion": "sad"}', "gloomy") == ParsedEmotion(CALM, True)
    # a label under a score key moves with the swap: 低落 now holds "sad" -> 低落 0.0, 悲伤 1.0
    assert parse('{"悲伤": "sad"}', "gloomy") == ParsedEmotion(vec(sad=1.0), True)
    # a bare JSON string has no .get(): upstream raises
    assert parse('"悲伤"', "gloomy") == ParsedEmotion(CALM, False)


# --- answers upstream raises on ---------------------------------------------------------------------

@pytest.mark.parametrize("answer", [
    '{"高兴": "0.8"}',  # a number in a string is not a label and not a number
    '{"高兴": "very"}',
    '{"高兴": null}',
    '{"高兴": [0.8]}',
    '{"高兴": {"score": 0.8}}',
    '{"高兴": 0.5, "悲伤": "x"}',  # one bad value spoils the answer
    "[" * 100000 + "]" * 100000,  # json.loads: RecursionError, not a JSONDecodeError
    '{"高兴": ' + "1" * 5000 + "}",  # json.loads: ValueError (integer digit limit), not a JSONDecodeError
])
def test_non_numeric_or_undecodable_values_are_unparsed(answer):
    assert parse(answer) == ParsedEmotion(CALM, False)


@pytest.mark.parametrize("answer", ["[1, 2]", "3", "0.9", "null", "true", '["悲伤"]'])
def test_json_that_is_not_an_object(answer):
    # upstream: no emotion key -> calm without error; with a melancholic word its swap fails (no .get)
    assert parse(answer) == ParsedEmotion(CALM, False)
    assert parse(answer, "depressed") == ParsedEmotion(CALM, False)


def test_non_string_arguments_do_not_raise():
    assert parse_emotion_answer(None, PLAIN) == ParsedEmotion(CALM, False)  # type: ignore[arg-type]
    assert parse_emotion_answer('{"高兴": 1}', None) == ParsedEmotion(CALM, False)  # type: ignore[arg-type]


# --- NaN / Infinity ---------------------------------------------------------------------------------

@pytest.mark.parametrize("literal, expected", [
    ("NaN", 1.2),  # upstream's min(1.2, nan) keeps 1.2 (nan < 1.2 is False): kept, it is finite
    ("Infinity", 1.2),
    ("-Infinity", 0.0),
])
def test_non_finite_json_numbers_become_finite_as_upstream_clamps_them(literal, expected):
    result = parse('{"高兴": %s, "愤怒": 0.25}' % literal)
    assert result == ParsedEmotion(vec(happy=expected, angry=0.25), True)


def test_only_negative_infinity_is_calm():
    assert parse('{"高兴": -Infinity}') == ParsedEmotion(CALM, True)


# --- never raises -----------------------------------------------------------------------------------

WEIRD = [
    "", "{", "}", "{}", "[]", '""', "null", "{{}}", '{"": 1}', ":", "::", ": 1", "1:1", '"a":1',
    "\x00", "\ud800", '"\\ud800"', "</think>", '{"高兴": 1}{"悲伤": 1}', "高兴:" * 1000, "." * 1000,
    '{"emotion": null}', '{"emotion": ["sad"]}', '{"label": {"x": 1}}', '{"情感": 0.5}', "NaN", "-Infinity",
    '{"自然": NaN, "高兴": NaN}', "1e999", '{"高兴": 1e-999}', "\u3000高兴\u3000:\u30000.5", "高兴 : 0.5",
]


def check_invariants(result: ParsedEmotion) -> None:
    assert isinstance(result, ParsedEmotion)
    assert len(result.vector) == 8
    assert all(type(v) is float and math.isfinite(v) and SCORE_MIN <= v <= SCORE_MAX for v in result.vector)
    assert any(v > 0.0 for v in result.vector)
    if not result.parsed:
        assert result.vector == CALM


@pytest.mark.parametrize("answer", WEIRD)
@pytest.mark.parametrize("text", [PLAIN, "GLOOMY"])
def test_weird_inputs_never_raise(answer, text):
    check_invariants(parse(answer, text))


def test_fuzz_random_strings_never_raise():
    rng = random.Random(20240601)
    atoms = ['{', '}', '"', ':', '：', ',', ' ', '.', '-', '0', '1', '5', '9', 'e', '[', ']', '\n', 'NaN',
             'Infinity', 'true', 'null', 'emotion', 'label', '情感', 'happy', ' Sad ', '高兴', '悲伤', '低落', '自然']
    parsed = 0
    for _ in range(500):
        answer = "".join(rng.choice(atoms) for _ in range(rng.randint(0, 20)))
        result = parse(answer, rng.choice([PLAIN, "gloomy", "低落"]))
        check_invariants(result)
        parsed += result.parsed
    assert parsed > 0  # the atoms do form real answers now and then


def test_fuzz_random_json_objects_never_raise():
    rng = random.Random(7)
    keys = list(EMOTIONS_CN) + ["emotion", "label", "情绪", "happy", "x"]
    values = [0, 1, 0.5, -0.3, 1.5, True, None, "sad", "Happy", " 低落 ", "x", "0.8", [1], {}, float("nan"),
              float("inf"), -float("inf"), 10 ** 30]
    for _ in range(300):
        obj = {rng.choice(keys): rng.choice(values) for _ in range(rng.randint(0, 5))}
        answer = json.dumps(obj, ensure_ascii=rng.random() < 0.5)
        if rng.random() < 0.3:
            answer = answer.strip("{}") + rng.choice(["", " ok", "."])
        check_invariants(parse(answer, rng.choice([PLAIN, "Depressed"])))
