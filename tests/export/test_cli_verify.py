"""`indextts2-onnx verify CKPT BUNDLE`: exit 0 when every graph matches the checkpoint, 1 otherwise."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from conftest import make_checkpoint  # noqa: E402
from indextts2_onnx.runtime.cli import main  # noqa: E402


def test_verify_passes_on_the_exporting_checkpoint(tiny_checkpoint, tiny_bundle, capsys):
    assert main(["verify", str(tiny_checkpoint), str(tiny_bundle)]) == 0
    out = capsys.readouterr().out
    assert "11 of 11 graphs match the checkpoint" in out


def test_verify_fails_on_other_weights(tiny_bundle, tmp_path, capsys):
    other = make_checkpoint(tmp_path / "other", seed=1)
    assert main(["verify", str(other), str(tiny_bundle)]) == 1
    out = capsys.readouterr().out
    assert "FAIL gpt_decoder" in out and "FAIL qwen_emotion" in out and "0 of 11 graphs match" in out


def test_export_refuses_a_non_empty_out_and_leaves_it_alone(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", str(tiny_checkpoint), "--out", str(out)]) == 1
    assert "not empty; pass --force" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"] and (out / "keep.txt").read_text() == "mine"
