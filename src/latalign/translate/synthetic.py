r"""A built-in synthetic translation corpus: a toy verb-final language into toy English.

What a model trained on it learns
---------------------------------
The *source* language ("syn") is invented: a fixed lexicon of pseudo-words (``lepone`` =
dog, ``fone`` = cat, ...) with a grammar unlike English; the *target* is a small fragment of English.
Every source sentence has one meaning; its English rendering is deterministic up to
**paraphrase**. The lexicon and grammar are fixed (the same for every seed); the seed picks the
sentences and the paraphrases.

Source grammar (verb-final, modifiers after the noun, postpositions)::

    S   -> [TIME] NP_subj [NP_loc POSTP] NP_obj VERB [ta] [mu] .
    NP  -> NOUN ADJ* [ri] DET          # ri = plural, determiner last

Target grammar (SVO, adjectives before the noun, prepositions, time adverb last)::

    S   -> NP_subj [does/do/did not] VERB NP_obj [PREP NP_loc] [TIME] .
    NP  -> DET ADJ* NOUN               # a/an and this/these etc. agree with the noun

So a translation needs **reordering** (the object and verb swap, adjectives move in front of
the noun, the determiner moves from last to first, the place phrase moves after the object, the
time adverb moves from the front to the end), **agreement** (``ta`` = past tense becomes
*saw*/*sees*/*see* according to tense and the subject's number; ``ri`` = plural becomes
*dogs*, *men*, *these* and *some*; *a* becomes *an* before a vowel), **do-support** for the
negation particle ``mu`` (*did not see*), and one-to-many **paraphrase**: about a third of the
concepts have 2-3 equally likely English renderings (big/large, shop/store, near/close to/next
to, yesterday/the day before, ...), drawn independently for each occurrence. Paraphrase makes
the target distribution multimodal, which is what the paper's latent alignment objectives are
about; a perfect model's BLEU against the single reference is therefore below 100.

Sizes: 49 nouns for people and things, 12 places, 25 adjectives, 22 verbs, 6 prepositions,
6 time adverbs, 10 determiners: 134 source and ~320 target word types (ignoring case).
Sentences are 4-15 words plus a period on both sides (longer draws are redrawn); about 10
source and 9 target words on average. Splits are disjoint on the source side.

Learnable on a CPU: the ``tiny`` preset (2+2 layers, d=64) trained for 3 minutes on one CPU
thread (603 updates, 8000 pairs) reached a valid loss of 0.16 nats/token and greedy test BLEU
71.2 (200 sentences, one reference; a single run when this module was written)::

    OMP_NUM_THREADS=1 latalign train --run-dir runs/syn --preset tiny --synthetic-size 8000 \
        --synthetic-eval-size 200 --vocab-size 1000 --warmup-updates 200 --lr 0.002 \
        --max-tokens 2048 --max-minutes 3 --validate-every 300 --device cpu
    latalign evaluate --run-dir runs/syn --split test --greedy --device cpu

>>> corpus = generate_synthetic(train_size=3, valid_size=1, test_size=1, seed=0)
>>> len(corpus.train), len(corpus.valid), len(corpus.test)
(3, 1, 1)
"""

from __future__ import annotations

import gzip
import os
import random
from dataclasses import dataclass
from pathlib import Path

from latalign.io import atomic_write
from latalign.translate.corpus import ParallelCorpus

SOURCE_LANG = "syn"
TARGET_LANG = "en"
MIN_WORDS = 4
MAX_WORDS = 15

# --- target lexicon: each concept lists its paraphrases -------------------------------------
# nouns: (singular, plural) per paraphrase
_ANIMATE = {
    "dog": [("dog", "dogs")],
    "cat": [("cat", "cats")],
    "man": [("man", "men")],
    "woman": [("woman", "women")],
    "child": [("child", "children"), ("kid", "kids")],
    "bird": [("bird", "birds")],
    "horse": [("horse", "horses")],
    "farmer": [("farmer", "farmers")],
    "teacher": [("teacher", "teachers")],
    "doctor": [("doctor", "doctors"), ("physician", "physicians")],
    "girl": [("girl", "girls")],
    "boy": [("boy", "boys")],
    "student": [("student", "students"), ("pupil", "pupils")],
    "king": [("king", "kings")],
    "queen": [("queen", "queens")],
    "fox": [("fox", "foxes")],
    "wolf": [("wolf", "wolves")],
    "baker": [("baker", "bakers")],
    "sailor": [("sailor", "sailors")],
    "soldier": [("soldier", "soldiers")],
    "friend": [("friend", "friends"), ("pal", "pals")],
    "neighbour": [("neighbour", "neighbours")],
    "artist": [("artist", "artists"), ("painter", "painters")],
    "owl": [("owl", "owls")],
}
_THINGS = {
    "car": [("car", "cars"), ("automobile", "automobiles")],
    "boat": [("boat", "boats")],
    "table": [("table", "tables")],
    "book": [("book", "books")],
    "apple": [("apple", "apples")],
    "letter": [("letter", "letters")],
    "ball": [("ball", "balls")],
    "hat": [("hat", "hats"), ("cap", "caps")],
    "door": [("door", "doors")],
    "window": [("window", "windows")],
    "box": [("box", "boxes")],
    "cup": [("cup", "cups"), ("mug", "mugs")],
    "key": [("key", "keys")],
    "flower": [("flower", "flowers")],
    "stone": [("stone", "stones"), ("rock", "rocks")],
    "picture": [("picture", "pictures"), ("painting", "paintings")],
    "chair": [("chair", "chairs")],
    "bag": [("bag", "bags")],
    "egg": [("egg", "eggs")],
    "umbrella": [("umbrella", "umbrellas")],
    "bottle": [("bottle", "bottles")],
    "coat": [("coat", "coats"), ("jacket", "jackets")],
    "lamp": [("lamp", "lamps")],
    "gift": [("gift", "gifts"), ("present", "presents")],
    "bicycle": [("bicycle", "bicycles"), ("bike", "bikes")],
}
# places: used after a preposition
_PLACES = {
    "house": [("house", "houses"), ("home", "homes")],
    "tree": [("tree", "trees")],
    "river": [("river", "rivers")],
    "garden": [("garden", "gardens")],
    "school": [("school", "schools")],
    "market": [("market", "markets")],
    "shop": [("shop", "shops"), ("store", "stores")],
    "bridge": [("bridge", "bridges")],
    "road": [("road", "roads"), ("street", "streets")],
    "church": [("church", "churches")],
    "station": [("station", "stations")],
    "wall": [("wall", "walls")],
}
_ADJECTIVES = {
    "big": ["big", "large"],
    "small": ["small", "little"],
    "old": ["old"],
    "young": ["young"],
    "red": ["red"],
    "blue": ["blue"],
    "green": ["green"],
    "happy": ["happy", "glad", "cheerful"],
    "sad": ["sad", "unhappy"],
    "tall": ["tall"],
    "quick": ["quick", "fast"],
    "slow": ["slow"],
    "beautiful": ["beautiful", "pretty", "lovely"],
    "angry": ["angry", "furious"],
    "quiet": ["quiet", "silent"],
    "brown": ["brown"],
    "white": ["white"],
    "black": ["black"],
    "heavy": ["heavy"],
    "new": ["new"],
    "strange": ["strange", "odd"],
    "clever": ["clever", "smart"],
    "poor": ["poor"],
    "rich": ["rich", "wealthy"],
    "tired": ["tired", "sleepy"],
}
# verbs: (base, third person singular, past) per paraphrase
_VERBS = {
    "see": [("see", "sees", "saw"), ("notice", "notices", "noticed")],
    "watch": [("watch", "watches", "watched")],
    "like": [("like", "likes", "liked"), ("enjoy", "enjoys", "enjoyed")],
    "carry": [("carry", "carries", "carried")],
    "find": [("find", "finds", "found")],
    "buy": [("buy", "buys", "bought"), ("purchase", "purchases", "purchased")],
    "build": [("build", "builds", "built")],
    "paint": [("paint", "paints", "painted")],
    "follow": [("follow", "follows", "followed")],
    "help": [("help", "helps", "helped"), ("assist", "assists", "assisted")],
    "call": [("call", "calls", "called")],
    "open": [("open", "opens", "opened")],
    "clean": [("clean", "cleans", "cleaned")],
    "visit": [("visit", "visits", "visited")],
    "push": [("push", "pushes", "pushed")],
    "pull": [("pull", "pulls", "pulled")],
    "wash": [("wash", "washes", "washed")],
    "draw": [("draw", "draws", "drew"), ("sketch", "sketches", "sketched")],
    "hold": [("hold", "holds", "held")],
    "throw": [("throw", "throws", "threw"), ("toss", "tosses", "tossed")],
    "catch": [("catch", "catches", "caught")],
    "want": [("want", "wants", "wanted"), ("desire", "desires", "desired")],
}
_PREPOSITIONS = {
    "near": ["near", "close to", "next to"],
    "in": ["in", "inside"],
    "on": ["on"],
    "behind": ["behind"],
    "under": ["under", "beneath"],
    "in_front_of": ["in front of"],
}
# time adverbs: (tense, paraphrases)
_TIMES = {
    "yesterday": ("past", ["yesterday", "the day before"]),
    "last_week": ("past", ["last week"]),
    "this_morning": ("past", ["this morning"]),
    "today": ("present", ["today"]),
    "every_day": ("present", ["every day", "daily"]),
    "now": ("present", ["now", "right now"]),
}
# determiners: (singular, plural) English forms; "a" has no plural: "some"
_DETERMINERS = {
    "the": ("the", "the"),
    "a": ("a", "some"),
    "this": ("this", "these"),
    "that": ("that", "those"),
    "my": ("my", "my"),
    "your": ("your", "your"),
    "his": ("his", "his"),
    "her": ("her", "her"),
    "our": ("our", "our"),
    "their": ("their", "their"),
}

# --- source lexicon ---------------------------------------------------------------------------
# Function words are fixed by hand; content words are pseudo-words drawn once from a fixed rng.
_SOURCE_FUNCTION = {
    "PL": "ri",
    "PAST": "ta",
    "NEG": "mu",
    "the": "ne",
    "a": "su",
    "this": "ko",
    "that": "ka",
    "my": "mi",
    "your": "yo",
    "his": "he",
    "her": "sha",
    "our": "nu",
    "their": "zo",
    "near": "ke",
    "in": "ina",
    "on": "po",
    "behind": "sau",
    "under": "dolo",
    "in_front_of": "mae",
}
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


def _build_source_lexicon() -> dict[str, str]:
    rng = random.Random(20210610)  # fixed: the language is the same for every corpus seed
    used = set(_SOURCE_FUNCTION.values())
    lex: dict[str, str] = {}
    concepts = [
        *_ANIMATE,
        *_THINGS,
        *_PLACES,
        *_ADJECTIVES,
        *_VERBS,
        *_TIMES,
    ]
    for concept in concepts:
        while True:
            n = rng.choice((2, 2, 3))
            word = "".join(rng.choice(_SYLLABLES) for _ in range(n))
            if word not in used:
                break
        used.add(word)
        lex[concept] = word
    lex.update(_SOURCE_FUNCTION)
    return lex


SOURCE_LEXICON: dict[str, str] = _build_source_lexicon()
_NOUNS = {**_ANIMATE, **_THINGS, **_PLACES}
# Key tuples, built once: drawing from them keeps generation fast.
_ANIMATE_KEYS = tuple(_ANIMATE)
_THING_KEYS = tuple(_THINGS)
_PLACE_KEYS = tuple(_PLACES)
_ADJECTIVE_KEYS = tuple(_ADJECTIVES)
_VERB_KEYS = tuple(_VERBS)
_TIME_KEYS = tuple(_TIMES)
_PREPOSITION_KEYS = tuple(_PREPOSITIONS)
_DETERMINER_KEYS = tuple(_DETERMINERS)


@dataclass
class _NounPhrase:
    noun: str
    adjectives: list[str]
    plural: bool
    det: str

    def source(self) -> list[str]:
        words = [SOURCE_LEXICON[self.noun]] + [SOURCE_LEXICON[a] for a in self.adjectives]
        if self.plural:
            words.append(SOURCE_LEXICON["PL"])
        return words + [SOURCE_LEXICON[self.det]]

    def target(self, rng: random.Random) -> list[str]:
        words = [rng.choice(_ADJECTIVES[a]) for a in self.adjectives]
        words.append(rng.choice(_NOUNS[self.noun])[int(self.plural)])
        det = _DETERMINERS[self.det][int(self.plural)]
        if det == "a" and words[0][0] in "aeiou":
            det = "an"
        return [det, *words]


def _noun_phrase(rng: random.Random, nouns: tuple[str, ...]) -> _NounPhrase:
    u = rng.random()
    n_adj = 0 if u < 0.5 else (1 if u < 0.9 else 2)
    return _NounPhrase(
        noun=rng.choice(nouns),
        adjectives=rng.sample(_ADJECTIVE_KEYS, n_adj),
        plural=rng.random() < 0.3,
        det=rng.choice(_DETERMINER_KEYS),
    )


def synthetic_pair(rng: random.Random) -> tuple[str, str]:
    """Draw one (source, target) sentence pair, each 4-15 words plus a final period."""
    while True:
        src, tgt = _draw(rng)
        if all(MIN_WORDS <= len(s) <= MAX_WORDS for s in (src, tgt)):
            break
    target = " ".join(tgt)
    return " ".join(src) + " .", target[0].upper() + target[1:] + "."


def _draw(rng: random.Random) -> tuple[list[str], list[str]]:
    subj = _noun_phrase(rng, _ANIMATE_KEYS)
    obj = _noun_phrase(rng, _ANIMATE_KEYS if rng.random() < 1 / 3 else _THING_KEYS)
    verb = rng.choice(_VERB_KEYS)
    time = rng.choice(_TIME_KEYS) if rng.random() < 0.35 else None
    past = _TIMES[time][0] == "past" if time else rng.random() < 0.5
    negated = rng.random() < 0.15
    place = _noun_phrase(rng, _PLACE_KEYS) if rng.random() < 0.4 else None
    prep = rng.choice(_PREPOSITION_KEYS) if place else None

    src: list[str] = [SOURCE_LEXICON[time]] if time else []
    src += subj.source()
    if place:
        src += place.source() + [SOURCE_LEXICON[prep]]
    src += obj.source() + [SOURCE_LEXICON[verb]]
    if past:
        src.append(SOURCE_LEXICON["PAST"])
    if negated:
        src.append(SOURCE_LEXICON["NEG"])

    base, third, past_form = rng.choice(_VERBS[verb])
    tgt = subj.target(rng)
    if negated:
        aux = "did" if past else ("do" if subj.plural else "does")
        tgt += [aux, "not", base]
    else:
        tgt.append(past_form if past else (base if subj.plural else third))
    tgt += obj.target(rng)
    if place:
        tgt += rng.choice(_PREPOSITIONS[prep]).split() + place.target(rng)
    if time:
        tgt += rng.choice(_TIMES[time][1]).split()
    return src, tgt


@dataclass
class SyntheticCorpus:
    """The three splits of the synthetic corpus (source lang ``syn``, target lang ``en``)."""

    train: ParallelCorpus
    valid: ParallelCorpus
    test: ParallelCorpus

    def splits(self) -> dict[str, ParallelCorpus]:
        return {"train": self.train, "valid": self.valid, "test": self.test}


def generate_synthetic(
    train_size: int = 20000, valid_size: int = 500, test_size: int = 500, seed: int = 0
) -> SyntheticCorpus:
    """Generate the synthetic corpus; the same arguments always give the same sentences.

    Test and valid are drawn first, then train; a pair whose source sentence already occurs in
    an earlier draw is redrawn, so the three splits are disjoint on the source side.
    """
    for name, size in (
        ("train_size", train_size),
        ("valid_size", valid_size),
        ("test_size", test_size),
    ):
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"expected {name} >= 1, found {size!r}")
    rng = random.Random(seed)
    seen: set[str] = set()

    def draw(name: str, n: int) -> ParallelCorpus:
        src: list[str] = []
        tgt: list[str] = []
        attempts = 0
        while len(src) < n:
            attempts += 1
            if attempts > 20 * n + 1000:  # the sentence space is ~1e15: never in practice
                raise ValueError(f"expected {n} distinct synthetic sentences, found {len(src)}")
            s, t = synthetic_pair(rng)
            if s in seen:
                continue
            seen.add(s)
            src.append(s)
            tgt.append(t)
        return ParallelCorpus(src, tgt, src_lang=SOURCE_LANG, tgt_lang=TARGET_LANG, name=name)

    test = draw("test", test_size)
    valid = draw("valid", valid_size)
    train = draw("train", train_size)
    return SyntheticCorpus(train=train, valid=valid, test=test)


def write_synthetic(
    directory: str | os.PathLike,
    train_size: int = 20000,
    valid_size: int = 500,
    test_size: int = 500,
    seed: int = 0,
    *,
    compress: bool = False,
) -> Path:
    """Write the corpus as ``{directory}/{train,valid,test}.{syn,en}[.gz]`` (a data dir that
    :func:`latalign.translate.data.prepare_data` reads with ``src="syn", tgt="en"``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    corpus = generate_synthetic(train_size, valid_size, test_size, seed)
    for split, pc in corpus.splits().items():
        for lang, lines in ((SOURCE_LANG, pc.src), (TARGET_LANG, pc.tgt)):
            text = "".join(line + "\n" for line in lines).encode("utf-8")
            path = directory / f"{split}.{lang}"
            if compress:
                path = path.with_name(path.name + ".gz")
                text = gzip.compress(text, mtime=0)
            atomic_write(path, text)
    return directory
