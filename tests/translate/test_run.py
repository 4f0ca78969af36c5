"""translate/run.py (a trained run), decode.SearchOptions and device.py: options checked
before anything loads, devices, input lines, and each run decoded as it was trained."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from latalign.translate.decode import OptionError, SearchOptions, translate_sentences
from latalign.translate.device import default_bf16, resolve_device
from latalign.translate.doubled import doubled_greedy_decode
from latalign.translate.regimes import DelayedInputModel
from latalign.translate.run import load_run, split_input_lines
from latalign.translate.train import train


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
    "kwargs, message, flag",
    [
        ({"beam": 0}, "beam >= 1", "--beam >= 1"),
        ({"beam": True}, "beam >= 1", "--beam >= 1"),
        ({"beam": 0, "greedy": True}, "beam >= 1", "--beam >= 1"),
        ({"batch_size": -1}, "batch_size >= 1", "--batch-size >= 1"),
        ({"length_beam": 0}, "length_beam >= 1", "--length-beam >= 1"),
        ({"lenpen": float("nan")}, "finite number for lenpen", "finite number for --lenpen"),
        ({"max_len_a": float("inf")}, "finite", "--max-len-a"),
        ({"max_len_a": -0.5}, "max_len_a >= 0", "--max-len-a >= 0"),
        ({"max_len_b": 1.5}, "integer max_len_b", "integer --max-len-b"),
    ],
)
def test_search_options_refuse_bad_values(kwargs, message, flag):
    with pytest.raises(OptionError, match=message) as info:
        SearchOptions(**kwargs)
    assert flag in info.value.for_flag()


def test_search_options_defaults_and_greedy():
    d = SearchOptions()
    assert (d.beam, d.lenpen, d.max_len_a, d.max_len_b, d.batch_size) == (5, 1.0, 1.2, 10, 64)
    assert SearchOptions(beam=7, greedy=True).beam == 1
    device, bf16 = SearchOptions(device="cpu").placement()
    assert device == torch.device("cpu") and bf16 is False
    assert SearchOptions(device="cpu", bf16=True).placement()[1] is True


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
def test_a_run_decodes_as_it_was_trained(tmp_path, tiny_config, one_thread, overrides):
    """A doubled-CTC run decodes with the doubled greedy decoder, a delayed-teacher-forcing run
    with its delayed inputs: ``TrainedRun.translate`` gives what the regime's own decoder
    gives, and differs from plain beam search over the raw model."""
    cfg = tiny_config(tmp_path / "run", max_updates=6, **overrides)
    train(cfg, progress=False)
    lines = ["a b c", "d e", "f g h i", "j k l m n", "o p"]
    run = load_run(cfg.run_dir)
    assert run.config == cfg and run.step == 6
    got = run.translate(lines, SearchOptions(beam=1, device="cpu"))
    model, tokenizer = run.model, run.tokenizer
    if overrides["regime"] == "doubled":
        decode = partial(doubled_greedy_decode, blank_id=tokenizer.blank_id)
        want = translate_sentences(model, tokenizer, lines, decode_batch=decode)
    else:
        want = translate_sentences(DelayedInputModel(model, 2), tokenizer, lines, beam=1)
    assert got == want
    assert got != translate_sentences(model, tokenizer, lines, beam=1)


def test_load_run_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        load_run(tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match="found neither"):
        load_run(tmp_path)
    foreign = tmp_path / "foreign.pt"
    torch.save({"step": 3}, foreign)
    with pytest.raises(ValueError, match="damaged or foreign"):
        load_run(foreign)
