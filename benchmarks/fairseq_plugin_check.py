"""Recompute the validation loss that fairseq-train logged for a latalign criterion, from the
checkpoint it saved right after, with latalign's losses called directly (not the plugin's
criterion code), and print one table row per run.

    python benchmarks/fairseq_plugin_check.py --data BIN --user-dir DIR \
        --run ctc:LOG:CKPT --run axe:LOG:CKPT --run dag:LOG:CKPT

Run with the Python of the fairseq venv (latalign installed there). For each run: the last
``valid`` json line of LOG (fairseq-train ``--log-format json``) gives ``valid_loss``, logged
in bits per aligned target token and rounded to 3 decimals; CKPT (fairseq's
``checkpoint_last.pt``, written after that validation) is loaded, the whole valid split is
run through the model in eval mode, and the loss is rebuilt here: the targets without bos,
eos and padding (as Python lists), the decoder lengths (``ceil(λ·S)`` from the source
lengths for the plugin's archs, the fed positions for fairseq's NAT), blank ``<s>``,
``zero_infinity=True``, ``reduction="sum"``, plus fairseq's length term for a model that
predicts lengths (factor × mean length NLL), divided by the aligned target tokens and ln 2.
"Match" = the logged value within its rounding (5e-4) plus 1e-5 of the recomputed one, and
the plugin's criterion run here on the same batch (unrounded, float32 logits) within 1e-6
relative of it. For CTC the table also gives torch's
own ``F.ctc_loss`` on the same log-probabilities.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from argparse import Namespace

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # fairseq pickles Namespaces

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from fairseq import checkpoint_utils, utils  # noqa: E402

import latalign as la  # noqa: E402

logging.getLogger().setLevel(logging.WARNING)  # a fairseq import sends INFO lines to stdout
TOLERANCE = 5e-4 + 1e-5  # the log's 3 decimals
RELATIVE = 1e-6  # the criterion's float32 logits against the float64 recomputation


def logged(log_path: str) -> tuple[float, list[float]]:
    """(last valid_loss, train_inner losses in order) from a fairseq json log."""
    valid, train = None, []
    with open(log_path, encoding="utf-8") as f:
        for line in f:
            if "| valid |" in line:
                valid = float(json.loads(line.split("| valid |", 1)[1])["valid_loss"])
            elif "| train_inner |" in line:
                train.append(float(json.loads(line.split("| train_inner |", 1)[1])["loss"]))
    if valid is None:
        raise SystemExit(
            f"fairseq_plugin_check.py: expected a valid line in {log_path}, found none"
        )
    return valid, train


def recompute(kind: str, data: str, ckpt: str) -> tuple[float, float, float | None, str, int]:
    """(latalign loss in bits per aligned token, the plugin criterion's unrounded value on the
    same batch, torch CTC or None, arch, sentences)."""
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [ckpt], arg_overrides={"data": data}
    )
    model = models[0].eval()
    task.load_dataset("valid")
    ds = task.dataset("valid")
    batch = ds.collater([ds[i] for i in range(len(ds))])
    if "prev_target" not in batch and hasattr(task, "inject_noise"):
        batch["prev_target"] = task.inject_noise(batch["target"])
    d = task.target_dictionary
    pad, bos, eos = d.pad(), d.bos(), d.eos()
    src_tokens = batch["net_input"]["src_tokens"]
    src_lengths = batch["net_input"]["src_lengths"]
    prev = batch.get("prev_target", batch["net_input"]["prev_output_tokens"])
    tgt = batch["target"]
    with torch.no_grad():
        out = model(src_tokens, src_lengths, prev, tgt)
        crit_loss, crit_size, _ = task.build_criterion(cfg.criterion)(model, batch)
    criterion_bits = float(crit_loss) / crit_size / math.log(2)
    word_ins = out["word_ins"]
    logits = word_ins["out"].double()
    sentences = [[t for t in row.tolist() if t not in (pad, bos, eos)] for row in tgt]
    n = torch.tensor([len(s) for s in sentences])
    targets = torch.full((len(sentences), max(int(n.max()), 1)), pad, dtype=torch.long)
    for b, s in enumerate(sentences):
        targets[b, : len(s)] = torch.tensor(s, dtype=torch.long)
    scale = getattr(cfg.model, "upsample_scale", None)
    if scale is not None:  # the plugin's archs: ceil(λ·S), at least 2
        limit = model.decoder.max_positions()
        lengths = [min(max(math.ceil(scale * int(s)), 2), limit) for s in src_lengths]
        input_lengths = torch.tensor(lengths)
    else:  # fairseq's NAT: one position per fed token
        input_lengths = prev.ne(pad).sum(1)
    log_probs = logits.log_softmax(-1)
    torch_ctc = None
    if kind == "ctc":
        loss = la.ctc_loss(
            log_probs, targets, input_lengths, n, blank=bos, reduction="sum", zero_infinity=True
        )
        torch_ctc = F.ctc_loss(
            log_probs.transpose(0, 1),
            targets,
            input_lengths,
            n,
            blank=bos,
            reduction="sum",
            zero_infinity=True,
        )
    elif kind == "axe":
        loss = la.axe_loss(
            log_probs, targets, input_lengths, n, blank=bos, reduction="sum", zero_infinity=True
        )
    elif kind == "dag":
        loss = la.dag_loss(
            log_probs,
            word_ins["transitions"].double(),
            targets,
            input_lengths,
            n,
            reduction="sum",
            zero_infinity=True,
        )
    else:
        raise SystemExit(f"fairseq_plugin_check.py: expected ctc, axe or dag, found {kind!r}")
    ntokens, nsentences = int(n.sum()), len(sentences)
    total = float(loss)
    if "length" in out:  # fairseq's length predictor: factor x mean NLL per aligned token
        length = out["length"]
        nll = F.cross_entropy(length["out"].double(), length["tgt"], reduction="sum")
        total += length["factor"] * float(nll) * ntokens / nsentences
    bits = total / ntokens / math.log(2)
    ctc_bits = None if torch_ctc is None else float(torch_ctc) / ntokens / math.log(2)
    return bits, criterion_bits, ctc_bits, cfg.model.arch, nsentences


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="fairseq-preprocess output directory")
    p.add_argument("--user-dir", required=True, help="the plugin directory")
    p.add_argument("--run", action="append", required=True, help="KIND:LOG:CHECKPOINT")
    a = p.parse_args()
    utils.import_user_module(Namespace(user_dir=a.user_dir))
    rows, notes, bad = [], [], 0
    for spec in a.run:
        kind, log_path, ckpt = spec.split(":", 2)
        valid, train = logged(log_path)
        mine, criterion, ctc_bits, arch, nsent = recompute(kind, a.data, ckpt)
        ok = abs(valid - mine) <= TOLERANCE and abs(criterion - mine) <= RELATIVE * max(1, mine)
        bad += not ok
        curve = f"{train[0]:.3f} → {train[-1]:.3f}" if train else "—"
        rows.append(
            f"| latalign_{kind} | {arch} | {curve} | {valid:.3f} | {criterion:.6f} | "
            f"{mine:.6f} | {abs(criterion - mine):.1e} | {'✓' if ok else '✗'} |"
        )
        if ctc_bits is not None:
            notes.append(
                f"latalign_{kind}: torch F.ctc_loss on the same log-probs {ctc_bits:.5f} "
                f"(|latalign − torch| {abs(ctc_bits - mine):.1e})"
            )
    print(f"valid split: {nsent} sentences, one batch; loss in bits per aligned target token")
    print(
        "| criterion | arch | train loss (first → last logged) | fairseq logged (valid) | "
        "criterion, unrounded | latalign recomputed | criterion − recomputed | match |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    for note in notes:
        print(note)
    if bad:
        raise SystemExit(f"fairseq_plugin_check.py: {bad} of {len(rows)} runs do not match")


if __name__ == "__main__":
    main()
