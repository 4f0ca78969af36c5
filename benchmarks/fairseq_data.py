"""Write latalign's prepared data as fairseq-preprocess input (shared by fairseq_anchor.sh and
fairseq_plugin.sh): the same joint sentencepiece pieces, as text, and a joint dict.txt.

    python benchmarks/fairseq_data.py --data DIR --out DIR [--train-pairs N] [--valid-pairs K]
        [--test-sentences K] [--vocab-size V]

Writes OUT/dict.txt and OUT/{train,valid,test}.{src,tgt}; prints one summary line. The
dictionary has fairseq's 4 specials + latalign's pieces without its specials + one padding
symbol, so that both vocabularies have V rows. N/K = 0: the whole split.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from latalign.translate.data import DataConfig, prepare_data
from latalign.translate.tokenizer import SPECIAL_IDS
from latalign.translate.train import default_cache_dir


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="parallel text directory (Multi30k)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--src", default="de")
    p.add_argument("--tgt", default="en")
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--train-pairs", type=int, default=0, help="first N training pairs (0: all)")
    p.add_argument("--valid-pairs", type=int, default=0, help="first K valid pairs (0: all)")
    p.add_argument("--test-sentences", type=int, default=1, help="first K test pairs (>= 1)")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = DataConfig(data=a.data, src=a.src, tgt=a.tgt, vocab_size=a.vocab_size)
    data = prepare_data(cfg, default_cache_dir())
    tok = data.tokenizer
    pieces = [tok.id_to_piece(i) for i in range(tok.vocab_size)]
    pieces[3] = "<unk>"  # fairseq's unknown symbol
    with open(out / "dict.txt", "w", encoding="utf-8") as f:
        for i, piece in enumerate(pieces):
            if i not in SPECIAL_IDS:
                f.write(f"{piece} 1\n")
        f.write("madeupword0000 0\n")  # 4 + (V - 5) + 1 = V rows, as latalign's V

    def head(ds, k):
        return ds if k <= 0 else ds.subset(range(min(k, len(ds))))

    splits = {
        "train": head(data.train, a.train_pairs),
        "valid": head(data.valid, a.valid_pairs),
        "test": head(data.test, max(a.test_sentences, 1)),
    }
    for name, ds in splits.items():
        for side, seqs in ((a.src, ds.src), (a.tgt, ds.tgt)):
            with open(out / f"{name}.{side}", "w", encoding="utf-8") as f:
                for ids in seqs:
                    f.write(" ".join(pieces[int(i)] for i in ids) + "\n")
    sizes = ", ".join(f"{name} {len(ds)}" for name, ds in splits.items())
    print(
        f"# data: {data.describe()}; written pairs: {sizes}; train target tokens + eos "
        f"{int(splits['train'].tgt_sizes.sum())}"
    )


if __name__ == "__main__":
    main()
