"""Bundle integrity at load: sha256 of every file, paths that stay inside the bundle, every opened file
listed, manifest field types, table shapes against the dims. Each case damages a copy of the tiny bundle
the way a bad disk, a hand edit or a hostile manifest would, and expects a BundleError naming the culprit."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from indextts2_onnx.runtime import BundleError, IndexTTS2
from indextts2_onnx.runtime.cli import main
from indextts2_onnx.runtime.integrity import external_data_locations


@pytest.fixture()
def bundle_copy(tiny_concat_bundle, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_concat_bundle, dst)
    return dst


def _edit_manifest(bundle: Path, fn) -> None:
    path = bundle / "manifest.json"
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))


def _rewrite(bundle: Path, rel: str, data: bytes) -> None:
    """Replace a bundle file and update its manifest entry, so only the check under test can object."""
    (bundle / rel).write_bytes(data)
    entry = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    _edit_manifest(bundle, lambda d: d["files"].update({rel: entry}))


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _flip_byte(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))


def _sha_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("indextts2-sha256")]


# --- checksums --------------------------------------------------------------------------------------------


def test_weights_corrupted_in_place_are_refused_unless_verify_is_off(bundle_copy):
    data = bundle_copy / "gpt_decoder.onnx.data"
    size = data.stat().st_size
    _flip_byte(data, size // 2)  # same size: the size check cannot see it
    assert data.stat().st_size == size
    with pytest.raises(BundleError, match=r"gpt_decoder\.onnx\.data: sha256 differs from the manifest "
                                          r"\(corrupted or modified\).*re-export the bundle or download it again"):
        IndexTTS2(bundle_copy)
    assert _sha_threads() == []  # the hashing thread is joined, not left behind
    tts = IndexTTS2(bundle_copy, verify=False)  # the flag skips hashing: this bundle then loads
    assert tts.providers == ["CPUExecutionProvider"]


def test_edited_sha256_in_the_manifest_is_refused(bundle_copy):
    _edit_manifest(bundle_copy, lambda d: d["files"]["speaker_matrix.npy"].update(sha256="0" * 64))
    with pytest.raises(BundleError, match=r"speaker_matrix\.npy: sha256 differs from the manifest"):
        IndexTTS2(bundle_copy)
    assert main(["info", str(bundle_copy), "--check"]) == 1


def test_mismatch_is_reported_even_when_the_load_fails_first(bundle_copy):
    """A zeroed graph cannot be loaded; with verify on, the error says why (its sha256), not just that."""
    g = bundle_copy / "dit.onnx"
    g.write_bytes(b"\x00" * g.stat().st_size)
    with pytest.raises(BundleError, match=r"dit\.onnx: sha256 differs") as err:
        IndexTTS2(bundle_copy)
    assert "not a readable ONNX graph" in str(err.value.__context__)
    assert _sha_threads() == []


# --- paths ------------------------------------------------------------------------------------------------


def _list_as_tokenizer(d: dict, rel: str) -> None:
    """List `rel` in files with the tokenizer's real size and sha256 and make it the tokenizer (so only the
    path check can object)."""
    d["files"][rel] = dict(d["files"]["bpe.model"])
    d["tables"]["tokenizer"] = rel


@pytest.mark.parametrize("rel, why", [
    ("../bpe.model", r"it holds a '\.\.' part"),
    ("sub/../../bpe.model", r"it holds a '\.\.' part"),
    ("ABSOLUTE", "it is absolute"),
    ("sub\\bpe.model", "it holds a backslash or a drive letter"),
    ("C:/bpe.model", "it holds a backslash or a drive letter"),
    ("./bpe.model", "it holds an empty or '.' part"),
    ("", "it is empty"),
])
def test_files_paths_that_leave_the_bundle_are_refused(bundle_copy, rel, why, capsys):
    outside = bundle_copy.parent / "bpe.model"
    shutil.copyfile(bundle_copy / "bpe.model", outside)
    rel = str(outside) if rel == "ABSOLUTE" else rel
    _edit_manifest(bundle_copy, lambda d: _list_as_tokenizer(d, rel))
    pattern = rf"manifest\.json: files key {re.escape(json.dumps(rel))} is not a path inside the bundle \({why}\)"
    with pytest.raises(BundleError, match=pattern):
        IndexTTS2(bundle_copy)
    assert main(["info", str(bundle_copy), "--check"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "not a path inside the bundle" in err


@pytest.mark.parametrize("field, edit", [
    ('tables["tokenizer"]', lambda d: d["tables"].update(tokenizer="../bpe.model")),
    ('graphs["dit"].file', lambda d: d["graphs"]["dit"].update(file="../dit.onnx")),
    ('graphs["dit"].file', lambda d: d["graphs"]["dit"].update(file="/dit.onnx")),
])
def test_table_and_graph_paths_that_leave_the_bundle_are_refused(bundle_copy, field, edit):
    _edit_manifest(bundle_copy, edit)
    with pytest.raises(BundleError, match=rf"{re.escape(field)} \"[^\"]+\" is not a path inside the bundle"):
        IndexTTS2(bundle_copy)


@pytest.mark.parametrize("rel", ["bpe.model", "dit.onnx", "dit.onnx.data"])
def test_symlink_out_of_the_bundle_is_refused(bundle_copy, rel, capsys):
    """The file is moved out and linked back: same bytes, size and sha256, yet it is not in the bundle."""
    outside = bundle_copy.parent / "elsewhere" / rel
    outside.parent.mkdir()
    shutil.move(bundle_copy / rel, outside)
    (bundle_copy / rel).symlink_to(outside)
    with pytest.raises(BundleError, match=rf"files key \"{re.escape(rel)}\" leads outside the bundle"):
        IndexTTS2(bundle_copy)
    assert main(["info", str(bundle_copy), "--check"]) == 1  # info --check must not vouch for it
    err = capsys.readouterr().err
    assert "leads outside the bundle" in err and "all sha256 checksums match" not in err


def test_symlink_inside_the_bundle_is_accepted(bundle_copy):
    (bundle_copy / "tables").mkdir()
    shutil.move(bundle_copy / "bpe.model", bundle_copy / "tables" / "bpe.model")
    (bundle_copy / "bpe.model").symlink_to(bundle_copy / "tables" / "bpe.model")
    assert IndexTTS2(bundle_copy).tokenize("hello")


# --- every opened file listed -----------------------------------------------------------------------------


@pytest.mark.parametrize("rel, field", [("dit.onnx", 'graphs["dit"].file'),
                                        ("emotion_matrix.npy", 'tables["emotion_matrix"]')])
def test_graph_or_table_not_listed_is_refused(bundle_copy, rel, field):
    _edit_manifest(bundle_copy, lambda d: d["files"].pop(rel))
    with pytest.raises(BundleError, match=rf"{re.escape(field)} \"{re.escape(rel)}\" is not listed in files"):
        IndexTTS2(bundle_copy)


def test_external_data_not_listed_is_refused(bundle_copy):
    _edit_manifest(bundle_copy, lambda d: d["files"].pop("dit.onnx.data"))
    with pytest.raises(BundleError, match=r"dit\.onnx: its weights are read from 'dit\.onnx\.data', which the "
                                          r"manifest does not list"):
        IndexTTS2(bundle_copy)


@pytest.mark.parametrize("location, why", [("../dit.onnx.data", "it holds a '..' part"),
                                           ("other.data", "which the manifest does not list")])
def test_graph_reading_weights_from_elsewhere_is_refused(bundle_copy, location, why):
    """The graph itself names another data file (listed checksums updated, so only this check objects)."""
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(bundle_copy / "dit.onnx"), load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    shutil.copyfile(bundle_copy / "dit.onnx.data", bundle_copy / "other.data")  # present, not listed
    shutil.copyfile(bundle_copy / "dit.onnx.data", bundle_copy.parent / "dit.onnx.data")
    _rewrite(bundle_copy, "dit.onnx", model.SerializeToString())
    with pytest.raises(BundleError, match=r"dit\.onnx: .*" + re.escape(why)):
        IndexTTS2(bundle_copy, verify=False)


def test_external_data_locations_match_onnx(tiny_concat_bundle):
    """The runtime's protobuf reader finds exactly the locations the onnx package sees, in every graph."""
    onnx = pytest.importorskip("onnx")
    for path in sorted(tiny_concat_bundle.glob("*.onnx")):
        model = onnx.load(str(path), load_external_data=False)
        tensors = list(model.graph.initializer) + [a.t for n in model.graph.node for a in n.attribute
                                                   if a.type == onnx.AttributeProto.TENSOR]
        want = {e.value for t in tensors for e in t.external_data if e.key == "location"}
        assert want == {path.name + ".data"}, path.name
        assert external_data_locations(path.read_bytes()) == want, path.name


def test_external_data_locations_in_subgraphs_and_rejects_garbage():
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    def ext(name: str, location: str) -> TensorProto:
        t = helper.make_tensor(name, TensorProto.FLOAT, [1], [0.0])
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        t.external_data.add(key="location", value=location)
        return t

    then = helper.make_graph([helper.make_node("Constant", [], ["y"], value=ext("c", "deep.data"))], "then", [],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    node = helper.make_node("If", ["cond"], ["out"], then_branch=then, else_branch=then)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1])],
                              initializer=[ext("w", "top.data")])
    buf = helper.make_model(graph).SerializeToString()
    assert external_data_locations(buf) == {"top.data", "deep.data"}
    with pytest.raises(ValueError):
        external_data_locations(buf[:-3])  # cut inside a field
    with pytest.raises(ValueError):
        external_data_locations(b"\x00" * 64)  # field number 0


# --- field types ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["gpt"].update(layers="20"), r'gpt\.layers must be an integer, got "20"'),
    (lambda d: d["gpt"].update(heads=True), r"gpt\.heads must be an integer, got true"),
    (lambda d: d["acoustic"].update(style_dim=48.0), r"acoustic\.style_dim must be an integer, got 48\.0"),
    (lambda d: d["gpt"].update(model_dim=0), r"gpt\.model_dim must be a positive integer, got 0"),
    (lambda d: d.update(graphs=[]), r"graphs must be an object, got \[\]"),
    (lambda d: d.update(gpt=None), r"gpt must be an object, got null"),
    (lambda d: d["files"]["bpe.model"].update(sha256="ABC"),
     r'files\["bpe\.model"\]\.sha256 must be 64 lowercase hex digits, got "ABC"'),
    (lambda d: d["files"]["bpe.model"].update(size=-1),
     r'files\["bpe\.model"\]\.size must be a non-negative integer, got -1'),
    (lambda d: d["files"]["bpe.model"].update(size="243290"),
     r'files\["bpe\.model"\]\.size must be an integer, got "243290"'),
    (lambda d: d.update(emo_num=["3"]), r'emo_num\[0\] must be an integer, got "3"'),
    (lambda d: d.update(emo_num=[]), r"emo_num must be a non-empty list of positive integers, got \[\]"),
    (lambda d: d.update(format_version=1.1), r"format_version must be a string, got 1\.1"),
    (lambda d: d.update(format_version="1.x"), r'format_version must be a version like "1\.1", got "1\.x"'),
    (lambda d: d["tables"].update(tokenizer=5), r'tables\["tokenizer"\] must be a string, got 5'),
    (lambda d: d["graphs"]["dit"].update(inputs="x"), r'graphs\["dit"\]\.inputs must be a list, got "x"'),
    (lambda d: d["graphs"]["dit"].update(device="tpu"), r'graphs\["dit"\]\.device must be one of'),
    (lambda d: d["tables"].pop("mel_filterbank"), r"tables has no mel_filterbank"),
])
def test_wrong_field_types_are_bundle_errors(bundle_copy, edit, message):
    _edit_manifest(bundle_copy, edit)
    with pytest.raises(BundleError, match=r"manifest\.json: " + message):
        IndexTTS2(bundle_copy)


def test_info_shows_free_form_export_records_without_trusting_them(bundle_copy, capsys):
    _edit_manifest(bundle_copy, lambda d: d["graphs"]["dit"].update(parity={"max_abs_diff": "x"},
                                                                    gate={"chosen": 3}))
    assert main(["info", str(bundle_copy)]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.strip().startswith("dit "))
    assert line.endswith("parity n/a  gate record unreadable"), line


def test_manifest_that_is_not_an_object(bundle_copy):
    (bundle_copy / "manifest.json").write_text("[1, 2]")
    with pytest.raises(BundleError, match=r"manifest\.json: the manifest must be an object, got \[1, 2\]"):
        IndexTTS2(bundle_copy)


# --- dims against the files -------------------------------------------------------------------------------


def test_emotion_matrix_rows_must_match_emo_num(bundle_copy):
    emo = np.load(bundle_copy / "emotion_matrix.npy")
    _rewrite(bundle_copy, "emotion_matrix.npy", _npy(emo[:-1]))
    rows, width = emo.shape
    with pytest.raises(BundleError, match=rf"emotion_matrix\.npy: the matrix has shape \[{rows - 1}, {width}\], "
                                          rf"the manifest's dims need \[{rows}, {width}\] \(sum\(emo_num\)"):
        IndexTTS2(bundle_copy)


def test_emo_num_edited_against_the_matrices(bundle_copy):
    _edit_manifest(bundle_copy, lambda d: d["emo_num"].__setitem__(0, d["emo_num"][0] + 1))
    with pytest.raises(BundleError, match=r"emotion_matrix\.npy: the matrix has shape"):
        IndexTTS2(bundle_copy)


def test_speaker_matrix_width_must_match_style_dim(bundle_copy):
    spk = np.load(bundle_copy / "speaker_matrix.npy")
    _rewrite(bundle_copy, "speaker_matrix.npy", _npy(spk[:, :-1]))
    with pytest.raises(BundleError, match=r"speaker_matrix\.npy: .*acoustic\.style_dim"):
        IndexTTS2(bundle_copy)


def test_gpt_tables_shape_must_match_dims(bundle_copy):
    with np.load(bundle_copy / "gpt_tables.npz") as z:
        tables = {k: z[k] for k in z.files}
    rows, width = tables["mel_embedding"].shape
    tables["mel_embedding"] = tables["mel_embedding"][:-1]
    buf = io.BytesIO()
    np.savez(buf, **tables)
    _rewrite(bundle_copy, "gpt_tables.npz", buf.getvalue())
    with pytest.raises(BundleError, match=rf"gpt_tables\.npz: mel_embedding has shape \[{rows - 1}, {width}\], "
                                          rf"the manifest's dims need \[{rows}, {width}\] \(number_mel_codes"):
        IndexTTS2(bundle_copy)


def test_gpt_tables_missing_a_table_is_a_bundle_error(bundle_copy):
    with np.load(bundle_copy / "gpt_tables.npz") as z:
        tables = {k: z[k] for k in z.files if k != "speed_embedding"}
    buf = io.BytesIO()
    np.savez(buf, **tables)
    _rewrite(bundle_copy, "gpt_tables.npz", buf.getvalue())
    with pytest.raises(BundleError, match=r"gpt_tables\.npz: cannot read the gpt_tables table \(KeyError"):
        IndexTTS2(bundle_copy)


def test_mel_filterbank_shape_must_match_n_mels(bundle_copy):
    bank = np.load(bundle_copy / "mel_filterbank.npy")
    _rewrite(bundle_copy, "mel_filterbank.npy", _npy(bank[:, :-1]))
    with pytest.raises(BundleError, match=rf"mel_filterbank\.npy: the filter bank has shape "
                                          rf"\[{bank.shape[0]}, {bank.shape[1] - 1}\]"):
        IndexTTS2(bundle_copy)


def test_decoder_inputs_must_match_gpt_dims(bundle_copy):
    _edit_manifest(bundle_copy, lambda d: d["gpt"].update(heads=d["gpt"]["heads"] * 2))
    with pytest.raises(BundleError, match=r"gpt_decoder\.onnx: input past_key_0 has shape"):
        IndexTTS2(bundle_copy)


def test_decoder_cache_must_have_gpt_layers_layers(bundle_copy):
    """The caches are found by name for gpt.layers layers: one layer more is a missing input (named), one
    less an input without a role."""
    layers = json.loads((bundle_copy / "manifest.json").read_text())["gpt"]["layers"]
    _edit_manifest(bundle_copy, lambda d: d["gpt"].update(layers=layers + 1))
    with pytest.raises(BundleError, match=rf"gpt_decoder\.onnx: no input past_key_{layers} \(the past layer "
                                          rf"{layers} key; gpt\.layers {layers + 1}.*belong together; re-export it"):
        IndexTTS2(bundle_copy)
    _edit_manifest(bundle_copy, lambda d: d["gpt"].update(layers=layers - 1))
    with pytest.raises(BundleError, match=rf"gpt_decoder\.onnx: input past_key_{layers - 1} has no role: it is "
                                          rf"neither an input of the concat layout nor a past of the gpt\.layers "
                                          rf"{layers - 1}"):
        IndexTTS2(bundle_copy)


def test_decoder_presents_must_be_outputs(bundle_copy):
    _edit_manifest(bundle_copy, lambda d: d["graphs"]["gpt_decoder"].update(
        kv_cache={"past": "past_{kind}_{layer}", "present": "next_{kind}_{layer}"}))
    with pytest.raises(BundleError, match=r"gpt_decoder\.onnx: no output next_key_0 \(the present layer 0 key"):
        IndexTTS2(bundle_copy)


def test_decoder_cache_names_must_differ(bundle_copy):
    """Patterns valid on their own can still give two tensors one name: past layer 0 key "key10" is
    present layer 10 key "key10" once there are 11 layers."""
    _edit_manifest(bundle_copy, lambda d: (d["gpt"].update(layers=11), d["graphs"]["gpt_decoder"].update(
        kv_cache={"past": "{kind}1{layer}", "present": "{kind}{layer}"})))
    with pytest.raises(BundleError, match=r'manifest\.json: graphs\["gpt_decoder"\]\.kv_cache .* gives two cache '
                                          r"tensors the same name for gpt\.layers 11"):
        IndexTTS2(bundle_copy)


# --- the command line -------------------------------------------------------------------------------------


def test_cli_prints_one_error_line_for_a_damaged_bundle(bundle_copy, tmp_path, capsys):
    from indextts2_onnx.runtime.audio import synthetic_voice, write_wav

    voice = tmp_path / "voice.wav"
    write_wav(voice, synthetic_voice(2.0, 22050), 22050)
    _flip_byte(bundle_copy / "campplus.onnx.data", 1000)
    out = tmp_path / "out.wav"
    assert main(["synth", "--bundle", str(bundle_copy), "--text", "hello", "--speaker", str(voice),
                 "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "campplus.onnx.data: sha256 differs from the manifest" in err and not out.exists()

    _edit_manifest(bundle_copy, lambda d: d["gpt"].update(layers="20"))
    assert main(["info", str(bundle_copy)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert 'gpt.layers must be an integer, got "20"' in err
