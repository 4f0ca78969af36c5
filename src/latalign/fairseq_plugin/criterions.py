"""fairseq criteria ``latalign_ctc``, ``latalign_axe`` and ``latalign_dag``.

Each is a thin wrapper around one latalign loss (``latalign.ctc_loss``, ``axe_loss``,
``dag_loss``, always ``from_logits=True``), the fairseq way: the criterion runs the model,
cuts the batch into what the loss takes, and returns detached sums for logging.

What is aligned
    The predictions are the decoder's non-padding positions: ``L_b`` =
    ``net_output["word_ins"]["lengths"]`` where the model gives it (the plugin's
    ``latalign_nat_upsampled`` / ``latalign_nat_dag`` archs: ``λ·S`` positions), else the
    non-padding positions of ``prev_output_tokens`` (fairseq's own NAT models under
    ``--task translation_lev --noise full_mask``: one position per target token, bos and eos
    included). The targets are the sentence ``y_1 .. y_n``: ``sample["target"]`` without
    bos, eos and padding (a NAT places the sentence; its length is the output's length).

Blank (CTC, AXE)
    fairseq's dictionary has no blank symbol. ``--blank-symbol`` names one of its symbols;
    the default ``<s>`` (bos) never occurs in the aligned targets (bos is dropped from them
    and fairseq-preprocess never writes it inside a sentence), needs no new embedding row, and
    fairseq's ``Dictionary.string`` already drops it from decoded text. A dedicated symbol
    (e.g. a ``<blank>`` line appended to ``dict.txt`` before fairseq-preprocess) works too; a
    target that contains the blank is refused with a ValueError naming it.

Logging (fairseq's conventions)
    ``loss`` is the sum over the batch in nats; ``sample_size`` is the number of aligned
    target tokens ``Σ n`` (or sentences with ``--sentence-avg``), so the logged ``loss``
    (fairseq divides by ``sample_size`` and ``ln 2``) is bits per target token. The latalign
    term alone is logged as ``ctc``/``axe``/``dag``; fairseq's length predictor term (AXE on
    fairseq's NAT models) as ``length``, added as ``factor × mean length NLL`` per token
    (scaled by ``sample_size / nsentences``, as ``nat_loss`` weighs it). ``infeasible`` is the
    share of sentences without any alignment (too few positions); with the default zero_infinity
    their loss and gradient are 0 (``--no-zero-infinity``: the loss is inf and fairseq stops).
"""

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch.nn.functional as F
from fairseq import utils
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import metrics
from omegaconf import II
from torch import Tensor

from latalign import align
from latalign.fairseq_plugin.layout import has_alignment, sentence_targets

__all__ = ["LatalignAXECriterion", "LatalignCTCCriterion", "LatalignDAGCriterion"]


@dataclass
class _LossConfig(FairseqDataclass):
    no_zero_infinity: bool = field(
        default=False,
        metadata={
            "help": "keep an infeasible sentence's loss inf (latalign zero_infinity=False); "
            "by default it is 0 with a zero gradient"
        },
    )
    # no `from __future__ import annotations` and Optional[...]: fairseq reads these types
    latalign_backend: Optional[str] = field(  # noqa: UP045
        default=None,
        metadata={"help": "latalign backend (numba, torch, triton); default: by device"},
    )
    label_smoothing: float = field(
        default=0.0,
        metadata={
            "help": "read by fairseq's own NAT models (they put it in their output); the "
            "latalign losses have no label smoothing, so it must be 0"
        },
    )
    sentence_avg: bool = II("optimization.sentence_avg")


@dataclass
class LatalignCTCConfig(_LossConfig):
    blank_symbol: str = field(
        default="<s>", metadata={"help": "dictionary symbol used as the CTC blank"}
    )


@dataclass
class LatalignAXEConfig(_LossConfig):
    blank_symbol: str = field(
        default="<s>", metadata={"help": "dictionary symbol used as AXE's blank (ε)"}
    )
    delta: float = field(
        default=1.0, metadata={"help": "AXE's weight of the skip-target (clone_prediction) move"}
    )


@dataclass
class LatalignDAGConfig(_LossConfig):
    pass


class _LatalignCriterion(FairseqCriterion):
    """Runs the model, calls :meth:`align_loss` on its output, adds a length term, logs."""

    name = ""  # the logged key of the latalign term
    needs_blank = True

    def __init__(self, task: Any, cfg: _LossConfig) -> None:
        super().__init__(task)
        self.cfg = cfg
        self.sentence_avg = cfg.sentence_avg
        self.zero_infinity = not cfg.no_zero_infinity
        # what every latalign call of the plugin shares: per-sentence nats from the logits
        self.options = {
            "reduction": "none",
            "zero_infinity": self.zero_infinity,
            "from_logits": True,
            "backend": cfg.latalign_backend,
        }
        if cfg.label_smoothing != 0:
            raise ValueError(
                f"expected --label-smoothing 0 with a latalign criterion, found {cfg.label_smoothing}"
            )
        d = task.target_dictionary
        self.bos, self.eos = d.bos(), d.eos()
        self.blank = -1
        if self.needs_blank:
            self.blank = d.index(cfg.blank_symbol)
            if self.blank == d.unk() and cfg.blank_symbol != d.unk_word:
                raise ValueError(
                    f"expected --blank-symbol in the target dictionary, found "
                    f"{cfg.blank_symbol!r} missing"
                )
            if self.blank in (self.padding_idx, self.eos):
                raise ValueError(
                    f"expected a --blank-symbol other than pad and eos, found {cfg.blank_symbol!r}"
                )

    def align_loss(
        self,
        word_ins: dict[str, Tensor],
        targets: Tensor,
        input_lengths: Tensor,
        target_lengths: Tensor,
    ) -> Tensor:
        """(N,) latalign losses in nats of the batch's sentences: :meth:`latalign_loss` on
        the decoder's logits with the blank, :meth:`loss_options` and the shared options."""
        return self.latalign_loss(
            word_ins["out"], targets, input_lengths, target_lengths, blank=self.blank,
            **self.loss_options(), **self.options,
        )  # fmt: skip

    @staticmethod
    def latalign_loss(*args: Any, **kwargs: Any) -> Tensor:
        """The latalign loss function of the criterion (``latalign.ctc_loss`` ...)."""
        raise NotImplementedError

    def loss_options(self) -> dict[str, Any]:
        """The criterion's own keyword arguments of :meth:`latalign_loss`."""
        return {}

    def forward(self, model: Any, sample: dict[str, Any], reduce: bool = True):
        net_input = sample["net_input"]
        prev = sample.get("prev_target", net_input.get("prev_output_tokens"))
        tgt = sample["target"]
        out = model(net_input["src_tokens"], net_input["src_lengths"], prev, tgt)
        word_ins = out["word_ins"]
        if "lengths" in word_ins:
            input_lengths = word_ins["lengths"]
        else:
            input_lengths = prev.ne(self.padding_idx).sum(1)
        targets, target_lengths = sentence_targets(
            tgt, pad=self.padding_idx, bos=self.bos, eos=self.eos
        )
        if self.needs_blank and bool((targets == self.blank).any()):
            raise ValueError(
                f"expected targets without the blank {self.cfg.blank_symbol!r} "
                f"(id {self.blank}), found it; choose another --blank-symbol"
            )
        losses = self.align_loss(word_ins, targets, input_lengths, target_lengths)  # (N,)
        feasible = has_alignment(self.name, targets, target_lengths, input_lengths)
        infeasible = int((~feasible).sum())
        align_sum = losses.sum()
        nsentences = tgt.size(0)
        ntokens_aligned = int(target_lengths.sum())
        sample_size = nsentences if self.sentence_avg else ntokens_aligned
        loss = align_sum
        length_sum = None
        if "length" in out and out["length"].get("out") is not None:
            length = out["length"]
            nll = F.cross_entropy(
                length["out"].float(), length["tgt"].to(length["out"].device), reduction="sum"
            )
            # factor x mean length NLL per unit of sample_size (nat_loss's weighting)
            length_sum = nll * (sample_size / max(nsentences, 1))
            loss = loss + length.get("factor", 1.0) * length_sum
        logging_output = {
            "loss": loss.data,
            self.name: align_sum.data,
            "infeasible": infeasible,
            "ntokens": sample["ntokens"],
            "nsentences": nsentences,
            "sample_size": sample_size,
        }
        if length_sum is not None:
            logging_output["length"] = length_sum.data
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs: list[dict[str, Any]]) -> None:
        sample_size = utils.item(sum(log.get("sample_size", 0) for log in logging_outputs))
        denom = max(sample_size, 1) * math.log(2)
        for key in ("loss", cls.name, "length"):
            if any(key in log for log in logging_outputs):
                total = utils.item(sum(log.get(key, 0) for log in logging_outputs))
                metrics.log_scalar(key, total / denom, sample_size, round=3)
        nsentences = utils.item(sum(log.get("nsentences", 0) for log in logging_outputs))
        infeasible = sum(log.get("infeasible", 0) for log in logging_outputs)
        # the share of sentences without any alignment (their loss is 0, or inf)
        metrics.log_scalar("infeasible", infeasible / max(nsentences, 1), nsentences, round=4)
        metrics.log_derived("ppl", lambda meters: utils.get_perplexity(meters["loss"].avg))

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True


@register_criterion("latalign_ctc", dataclass=LatalignCTCConfig)
class LatalignCTCCriterion(_LatalignCriterion):
    """``latalign.ctc_loss`` over the decoder's positions (use ``latalign_nat_upsampled``)."""

    name = "ctc"
    latalign_loss = staticmethod(align.ctc_loss)


@register_criterion("latalign_axe", dataclass=LatalignAXEConfig)
class LatalignAXECriterion(_LatalignCriterion):
    """``latalign.axe_loss`` at the decoder's positions: fairseq's own
    ``nonautoregressive_transformer`` (``--noise full_mask``: one position per target token, its
    length predicted) or the plugin's ``latalign_nat_upsampled``."""

    name = "axe"
    latalign_loss = staticmethod(align.axe_loss)

    def loss_options(self) -> dict[str, Any]:
        return {"delta": self.cfg.delta}


@register_criterion("latalign_dag", dataclass=LatalignDAGConfig)
class LatalignDAGCriterion(_LatalignCriterion):
    """``latalign.dag_loss`` over the decoder's vertices and their transitions (use
    ``latalign_nat_dag``, whose output carries ``word_ins["transitions"]`` (N, L, L))."""

    name = "dag"
    needs_blank = False

    def align_loss(self, word_ins, targets, input_lengths, target_lengths):
        if "transitions" not in word_ins:
            raise ValueError(
                "expected a model with DAG transitions (--arch latalign_nat_dag) for "
                "--criterion latalign_dag, found none in its output"
            )
        return align.dag_loss(
            word_ins["out"],
            word_ins["transitions"],
            targets,
            input_lengths,
            target_lengths,
            **self.options,
        )
