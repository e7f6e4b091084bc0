"""PII redaction latency: `PIIGuard.pseudonymize` on shoppers' messages of about 100, 500 and 1,000
characters, with and without the subject's known values, on the offline guard; and on a
decision's short query, first seen and repeated.

Prints JSON (p50/p95/p99 in milliseconds per scenario, of wall time and, as `..._cpu`, of the
process's CPU time per call) and writes it to `bench/results/pii.json`.
Texts are whole messages of `data/pii/labeled.jsonl` joined up to each length; known values are
those of a demo user (`data/demo/users.jsonl`) drawn per call, after one warm-up pass over all
users, as in a service whose users come back. The budget is p95 <= 20 ms under 1,000 characters.
Every message text is new to the guard (the with-known pass draws other texts than the pass
without), so these are costs of texts it has not seen; `query` is a 3-5 word request of a
decision ("a gift for my dad who loves wine"), `first_seen` new each call and `repeated` one the
guard saw before (its findings remembered by digest; the subject's values matched anew). numpy's
BLAS runs one thread, as the service sets it (`ATTUNE_TORCH_THREADS`).

    .venv/bin/python bench/pii.py [--n 300] [--spacy-model NAME] [--with-blank]

The guard runs as the service builds it: `en_core_web_lg` where installed, else the pinned
`en_core_web_sm`; `--blank` measures the degraded mode without NER, and `--with-blank` measures
both in the same run, alternating call by call so that both see the same load, and reports the
ratio of their p95s. Figures depend on the machine; compare ratios between runs, not single
numbers.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

from bench.decide import percentiles
from bench.report import emit
from policies.pii import KnownValues, PIIGuard, Vault
from policies.pii.ner import FALLBACK_MODELS
from store.schemas import UserRecord

ROOT = Path(__file__).resolve().parents[1]
LENGTHS = (100, 500, 1000)
# The words of a decision's short request: recipients, interests and requests, combined.
QUERY_WORDS = (
    ("a gift for my", "present for my", "something for my", "ideas for my"),
    ("dad", "mum", "sister", "brother", "niece", "grandpa", "colleague", "son", "best friend"),
    ("who loves", "into", "who likes", "mad about"),
    ("wine", "coffee", "lego", "gardening", "football", "baking", "puzzles", "camping", "jazz"),
)
DEFAULT_MODEL = "en_core_web_lg"  # the service's setting: the pinned small model where absent


def texts_of_length(
    messages: list[str], length: int, n: int, rng: random.Random, seen: set[str] | None = None
) -> list[str]:
    """`n` texts of whole messages joined by spaces, each as long as fits in `length`; none of
    them in `seen` or twice (`seen` is updated), so that the guard has seen none of them."""
    texts: list[str] = []
    seen = set() if seen is None else seen
    while len(texts) < n:
        text = ""
        for message in rng.sample(messages, len(messages)):
            candidate = f"{text} {message}" if text else message
            if len(candidate) > length:
                if len(text) >= 0.8 * length:
                    break
                continue
            text = candidate
        if text not in seen:
            seen.add(text)
            texts.append(text)
    return texts


def queries(n: int, rng: random.Random) -> list[str]:
    """`n` different short requests of three to six words, in a random order."""
    every = [
        f"{a} {b} {c} {d}"
        for a in QUERY_WORDS[0]
        for b in QUERY_WORDS[1]
        for c in QUERY_WORDS[2]
        for d in QUERY_WORDS[3]
    ]
    return rng.sample(every, min(n, len(every)))


def time_calls(
    guards: dict[str, PIIGuard],
    texts: list[str],
    people: list[KnownValues],
    rng: random.Random,
    cpu: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Milliseconds per `pseudonymize` call per guard, alternating guards call by call; the CPU
    milliseconds of each call go to `cpu` when given (what a busy machine's load changes least)."""
    samples: dict[str, list[float]] = {label: [] for label in guards}
    for text in texts:
        known = rng.choice(people)
        for label, guard in guards.items():
            start, used = time.perf_counter(), time.process_time()
            guard.pseudonymize(text, known=known, vault=Vault())
            samples[label].append((time.perf_counter() - start) * 1000)
            if cpu is not None:
                cpu.setdefault(label, []).append((time.process_time() - used) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="calls per scenario")
    parser.add_argument("--spacy-model", default=DEFAULT_MODEL)
    parser.add_argument(
        "--blank", action="store_true", help="no NER: the degraded mode, for comparison"
    )
    parser.add_argument(
        "--with-blank",
        action="store_true",
        help="also the blank mode, interleaved call by call, and the ratio of the p95s",
    )
    parser.add_argument("--labeled", type=Path, default=ROOT / "data" / "pii" / "labeled.jsonl")
    parser.add_argument("--users", type=Path, default=ROOT / "data" / "demo" / "users.jsonl")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pii.json")
    args = parser.parse_args()

    rng = random.Random(1)
    lines = args.labeled.read_text(encoding="utf-8").splitlines()
    messages = [json.loads(line)["text"] for line in lines if line.strip()]
    records = [
        UserRecord.model_validate_json(line)
        for line in args.users.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    people = [KnownValues.from_profile(record.profile) for record in records]
    threadpool_limits(1, user_api="blas")  # as the service does at start (agents.factory)
    fallbacks = () if args.blank else FALLBACK_MODELS
    guards = {"guard": PIIGuard(spacy_model=args.spacy_model, fallback_models=fallbacks)}
    if args.with_blank and not args.blank:
        guards["blank"] = PIIGuard(spacy_model=args.spacy_model, fallback_models=())
    seen: set[str] = set()
    for guard in guards.values():
        for known in people:  # warm-up: every user's recognizer, the regex and phone caches
            message = rng.choice(messages)
            seen.add(message)
            guard.pseudonymize(message, known=known, vault=Vault())

    results: dict[str, object] = {
        "mode": guards["guard"].mode,
        "degraded": guards["guard"].degraded,
    }
    if "blank" in guards:
        results["compared_with"] = guards["blank"].mode
    for length in LENGTHS:
        scenario: dict[str, object] = {}
        for with_known in (False, True):
            texts = texts_of_length(messages, length, args.n, rng, seen)
            scenario.setdefault("mean_chars", round(statistics.fmean(map(len, texts)), 1))
            scenario.setdefault("max_chars", max(map(len, texts)))
            cpu: dict[str, list[float]] = {}
            samples = time_calls(guards, texts, people if with_known else [KnownValues()], rng, cpu)
            name = "with_known_values" if with_known else "without_known_values"
            measured = percentiles(samples["guard"])
            scenario[name] = measured
            scenario[f"{name}_cpu"] = percentiles(cpu["guard"])
            if "blank" in guards:
                blank = percentiles(samples["blank"])
                scenario[f"{name}_blank"] = blank
                scenario[f"{name}_p95_ratio"] = round(measured["p95_ms"] / blank["p95_ms"], 2)
        results[f"chars_{length}"] = scenario
    asked = queries(args.n, rng)
    query: dict[str, object] = {"mean_chars": round(statistics.fmean(map(len, asked)), 1)}
    for name, texts in (("first_seen", asked), ("repeated", asked)):
        query[name] = {
            label: percentiles(measured)
            for label, measured in time_calls(guards, texts, people, rng).items()
        }
    results["query_with_known_values"] = query

    emit(results, args.out)


if __name__ == "__main__":
    main()
