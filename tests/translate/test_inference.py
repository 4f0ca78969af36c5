"""translate/inference.py: options checked before anything loads, devices, input lines."""

from __future__ import annotations

import pytest
import torch

from latalign.translate.inference import (
    DecodingOptions,
    default_bf16,
    evaluate_split,
    resolve_device,
    split_input_lines,
    translate_lines,
)


def test_split_input_lines_replaces_bad_bytes_and_names_their_lines():
    lines, bad = split_input_lines(b"gut\ncaf\xe9\r\n\nok\xff\xfe\nlast")
    assert lines == ["gut", "caf\ufffd", "", "ok\ufffd\ufffd", "last"]
    assert bad == [2, 4]
    # only \n splits: U+2028, form feed and a lone \r stay inside their line
    lines, bad = split_input_lines("a\u2028b\x0cc\rd\n".encode())
    assert lines == ["a\u2028b\x0cc\rd"] and bad == []
    assert split_input_lines(b"") == ([], [])
    assert split_input_lines(b"\n") == ([""], [])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"beam": 0}, "beam >= 1"),
        ({"beam": True}, "beam >= 1"),
        ({"batch_size": -1}, "batch_size >= 1"),
        ({"lenpen": float("nan")}, "finite"),
        ({"max_len_a": float("inf")}, "finite"),
        ({"max_len_a": -0.5}, "max_len_a >= 0"),
        ({"max_len_b": 1.5}, "integer max_len_b"),
    ],
)
def test_decoding_options_refuse_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DecodingOptions(**kwargs)
    # the library functions refuse them too, before looking for a run
    with pytest.raises(ValueError, match=message):
        translate_lines(["x"], run_dir="/no/such/run", **kwargs)
    with pytest.raises(ValueError, match=message):
        evaluate_split(run_dir="/no/such/run", **kwargs)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto", int8=True) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    for bad in ("tpu", "", "cuda:x", "meta"):
        with pytest.raises(ValueError, match="expected device auto, cpu, cuda or cuda:N"):
            resolve_device(bad)
    with pytest.raises(ValueError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count() + 3}")
    with pytest.raises(ValueError, match="--int8"):
        resolve_device("cuda", int8=True)


def test_bf16_defaults_off_on_the_cpu():
    assert default_bf16(torch.device("cpu")) is False
    if torch.cuda.is_available():
        assert default_bf16(torch.device("cuda")) == torch.cuda.is_bf16_supported()


@pytest.mark.parametrize(
    "overrides",
    [
        {"regime": "doubled", "criterion": "doubled_ctc"},
        {"regime": "delayed", "delay": 2},
    ],
    ids=["doubled", "delayed"],
)
def test_translate_lines_decodes_as_the_run_was_trained(
    tmp_path, tiny_config, one_thread, overrides
):
    """A doubled-CTC run decodes with the doubled greedy decoder, a delayed-teacher-forcing run
    with its delayed inputs: the CLI path gives what the regime's own decoder gives, and
    differs from plain beam search over the raw model when the regimes matter."""
    from functools import partial

    from latalign.translate.checkpoint import load_model
    from latalign.translate.decode import translate_sentences
    from latalign.translate.doubled import doubled_greedy_decode
    from latalign.translate.inference import translate_lines
    from latalign.translate.regimes import decoding_model
    from latalign.translate.train import train

    cfg = tiny_config(tmp_path / "run", max_updates=6, **overrides)
    train(cfg, progress=False)
    lines = ["a b c", "d e", "f g h i"]
    got = translate_lines(lines, run_dir=cfg.run_dir, device="cpu", beam=1)
    model, tokenizer, state = load_model(cfg.run_dir)
    model.eval()
    if overrides["regime"] == "doubled":
        decode = partial(doubled_greedy_decode, blank_id=tokenizer.blank_id)
        want = translate_sentences(model, tokenizer, lines, decode_batch=decode)
    else:
        want = translate_sentences(
            decoding_model(model, state["train_config"]), tokenizer, lines, beam=1
        )
    assert got == want
