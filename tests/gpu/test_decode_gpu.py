"""Decoding on CUDA gives what decoding on the CPU gives (skipped without CUDA).

A tiny model is trained for a few updates on the CPU (a real checkpoint, through the CLI),
then decoded on both devices: greedy and beam 5, token ids and scores, and through
``TrainedRun.translate`` (the path of ``latalign translate --device cuda``). TF32 and bf16
are switched off so both devices multiply in fp32.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TINY = [
    "--preset", "tiny", "--synthetic-size", "400", "--synthetic-eval-size", "32",
    "--vocab-size", "160", "--max-tokens", "600", "--warmup-updates", "5", "--lr", "0.003",
    "--validate-every", "1000", "--log-every", "1000", "--no-progress", "--device", "cpu",
]  # fmt: skip
LIM = dict(max_len_a=1.2, max_len_b=5)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from latalign.cli import main

    root = tmp_path_factory.mktemp("gpu_decode")
    argv = ["train", *TINY, "--max-updates", "30", "--run-dir", str(root / "run"),
            "--cache-dir", str(root / "cache")]  # fmt: skip
    assert main(argv) == 0
    return root / "run"


@pytest.fixture(autouse=True)
def no_tf32():
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = before


@pytest.fixture(scope="module")
def sentences(run_dir) -> list[str]:
    from latalign.translate.data import load_corpora
    from latalign.translate.run import load_run

    splits, _ = load_corpora(load_run(run_dir).config.data)
    return list(splits["test"].src[:24])


@pytest.mark.parametrize("beam", [1, 5])
def test_cuda_decoding_equals_cpu_decoding(run_dir, sentences, beam):
    from latalign.translate.decode import _collate_sources, beam_search_hypotheses, encode_sources
    from latalign.translate.run import load_run

    cpu = load_run(run_dir, device="cpu")
    cpu_model, tokenizer = cpu.model, cpu.tokenizer
    gpu_model = load_run(run_dir, device="cuda").model
    assert next(gpu_model.parameters()).is_cuda
    ids, _ = encode_sources(tokenizer, sentences)
    src, lengths = _collate_sources(ids, tokenizer.pad_id, "cpu")
    on_cpu = beam_search_hypotheses(cpu_model, src, lengths, beam=beam, **LIM)
    # sources given on the CPU: the decoder moves them to the model's device
    on_gpu = beam_search_hypotheses(gpu_model, src, lengths, beam=beam, **LIM)
    assert [[h.tokens for h in hs] for hs in on_gpu] == [[h.tokens for h in hs] for hs in on_cpu]
    for g, c in zip(on_gpu, on_cpu):
        assert [h.score for h in g] == pytest.approx([h.score for h in c], abs=1e-3)


@pytest.mark.parametrize("beam", [1, 5])
def test_translate_cuda_equals_cpu(run_dir, sentences, beam):
    from latalign.translate.decode import SearchOptions
    from latalign.translate.run import load_run

    run = load_run(run_dir)

    def translate(device: str) -> list[str]:
        return run.translate(sentences, SearchOptions(beam=beam, device=device, bf16=False, **LIM))

    cpu, gpu, auto = translate("cpu"), translate("cuda"), translate("auto")
    assert next(run.model.parameters()).is_cuda  # the run's model moved where it decodes
    assert gpu == cpu and auto == cpu
    assert sum(bool(t.strip()) for t in cpu) > len(cpu) // 2  # the model says something


def test_bf16_autocast_on_cuda_decodes(run_dir, sentences):
    from latalign.translate.decode import SearchOptions
    from latalign.translate.run import load_run

    options = SearchOptions(beam=5, device="cuda", **LIM)
    assert options.placement()[1] == torch.cuda.is_bf16_supported()  # the default: auto
    out = load_run(run_dir).translate(sentences, options)
    assert len(out) == len(sentences)
