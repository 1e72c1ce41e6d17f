"""Synthetic support tickets with one-sentence summaries, for tuneforge's offline seq2seq demo.

>>> from tuneforge.demo.summaries import generate, lead_baseline
>>> splits = generate(seed=0, n_train=20, n_validation=5, n_test=5)
>>> [len(splits[name]) for name in ("train", "validation", "test")]
[20, 5, 5]
>>> row = splits["train"][0]
>>> sorted(row)
['summary', 'text']
>>> len(row["summary"].split()) < len(row["text"].split())
True
>>> splits == generate(seed=0, n_train=20, n_validation=5, n_test=5)
True
>>> lead_baseline([{"text": "Hello, I ordered the Aurora kettle on May 3."}], n_words=4)
['Hello, I ordered the']

Every ticket is a customer writing about one order: which product, what went wrong, what they want, and their
name. The summary states exactly that in one fixed form, e.g.
"Dana wants a replacement for the cracked Aurora kettle." The ticket says it in 3-6 sentences
with varied templates and sentence order, greetings and sign-offs, paraphrased problems ("won't turn on" ->
faulty) and distractors: another product that works fine, the remedy the customer does *not* want ("a
replacement rather than a refund"), irrelevant details. The name is often only in the sign-off, so the classic
"lead" baseline (the first words of the text) gets some of the words but not the summary. Order numbers are in
the tickets but not in the summaries: the demo's bert2bert, trained for a few minutes, learns to copy names and
products but not arbitrary 5-digit numbers (it writes plausible wrong ones). Only the standard library is used,
and the output is a pure function of the seed.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

__all__ = ["generate", "lead_baseline", "write_demo_files"]

_FIRST = ["Dana", "Omar", "Priya", "Lukas", "Mei", "Tomas", "Aisha", "Jonas", "Sofia", "Ravi", "Elena", "Kwame",
          "Hannah", "Mateo", "Yuki", "Farah", "Noah", "Ingrid", "Diego", "Leila", "Marcus", "Chloe", "Ahmed",
          "Greta", "Samir", "Nadia", "Oliver", "Zara", "Felix", "Amara", "Victor", "Lena", "Hugo", "Maya"]
_LAST = ["Smith", "Okafor", "Patel", "Novak", "Chen", "Garcia", "Berg", "Rossi", "Khan", "Dubois", "Silva",
         "Weber", "Moreau", "Tanaka", "Jensen", "Costa", "Ali", "Murphy", "Kowalski", "Ivanova"]
_BRANDS = ["Aurora", "Nimbus", "Vega", "Orbit", "Pico", "Tundra", "Halo", "Zephyr", "Atlas", "Lumen", "Comet",
           "Ember", "Polar", "Summit", "Juniper", "Onyx"]
_TYPES = ["headset", "blender", "desk lamp", "smartwatch", "speaker", "kettle", "fan", "e-reader", "toaster",
          "camera", "keyboard", "coffee grinder", "router", "hair dryer", "monitor", "vacuum cleaner"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]
_PARTS = ["charger", "power cable", "manual", "remote", "lid", "stand", "adapter"]
_COLOURS = ["black", "white", "silver", "red", "blue", "green"]

# issue -> (words in the summary, how tickets say it, remedies that make sense)
_ISSUES: dict[str, tuple[str, list[str], list[str]]] = {
    "cracked": ("cracked", [
        "The {product} arrived with a cracked case.", "When I opened the box, the {type} was cracked.",
        "There is a crack right across the front of the {product}.",
        "The {product} came with its housing split in two places."], ["replacement", "refund", "repair"]),
    "faulty": ("faulty", [
        "The {product} stopped working after {n} days.", "The {product} won't turn on at all.",
        "The {product} keeps switching itself off.", "Since last week the {type} does nothing when I press power.",
        "The {product} worked once and then died."], ["replacement", "refund", "repair", "exchange"]),
    "undelivered": ("undelivered", [
        "The {product} never arrived.", "Tracking has said 'out for delivery' for {n} days, but no {type} came.",
        "I am still waiting for the {product}.", "The {product} has not been delivered yet."],
        ["replacement", "refund"]),
    "incomplete": ("incomplete", [
        "The {product} came without its {part}.", "The box with the {product} was missing the {part}.",
        "The {part} for the {product} was not in the package."], ["replacement", "refund"]),
    "wrong-colour": ("wrong-colour", [
        "I chose {colour}, but the {product} you sent is {colour2}.",
        "The {product} is {colour2} instead of the {colour} one I ordered."], ["exchange", "refund", "replacement"]),
    "noisy": ("noisy", [
        "The {product} makes a loud rattling noise.", "The {type} buzzes so loudly that I cannot use it.",
        "A high-pitched whine comes from the {product} whenever it is on."], ["replacement", "refund", "repair"]),
    "overheating": ("overheating", [
        "The {product} gets too hot to touch after a few minutes.", "The {type} overheats and smells of plastic.",
        "The {product} becomes dangerously hot when I use it."], ["replacement", "refund", "repair"]),
    "double-charged": ("double-charged", [
        "I was charged twice for the {product}.", "My card shows two payments for the {product}.",
        "You took the money for the {product} from my account twice."], ["refund"]),
}
_REMEDIES: dict[str, list[str]] = {
    "replacement": ["I would like a replacement.", "Please send me a new one.", "Could you replace it, please?",
                    "I'd like a replacement rather than a refund.", "A replacement would be great.",
                    "I don't want my money back, just another {type}."],
    "refund": ["I would like a refund.", "I want my money back.", "Please refund me.",
               "I'd prefer a refund, not a replacement.", "Please return the money to my card.",
               "I no longer want the {type}, so please refund the full amount."],
    "repair": ["Can you repair it under warranty?", "I would like it repaired.", "Please arrange a repair.",
               "I'd rather have it fixed than replaced."],
    "exchange": ["Could I exchange it for a different model?", "I'd like to swap it for another {type}.",
                 "Can I exchange it?", "Please let me exchange it rather than get a refund."],
}
_GREETINGS = ["Hello,", "Hi,", "Hi there,", "Dear support team,", "Good morning,", "Good afternoon,", "Hey,"]
_CLOSINGS = ["Thanks in advance.", "Thank you.", "I look forward to your reply.", "Please get back to me soon.",
             "Thanks for your help."]
_SIGNOFFS = ["Thanks, {first}", "Best regards, {first} {last}", "Kind regards, {first}", "Cheers, {first}",
             "Many thanks, {first} {last}", "Regards, {first} {last}"]
_INTROS = ["My name is {first} {last}.", "This is {first} {last}.", "{first} {last} here.",
           "I'm {first} {last}, a customer of yours."]
_PURCHASE = ["I ordered the {product} on {date} ({order}).", "On {date} I bought the {product}, {order}.",
             "I bought the {product} from your shop on {date} ({order}).", "My {order} contained the {product}.",
             "I received the {product} on {date}, {order}."]
_ORDER_REF = ["The order number is {num}.", "It was {order}.", "For reference, this is {order}.",
              "My order number is {num}.", "This concerns {order}."]
_ORDER_FIRST = ["I'm writing about {order}.", "I have a problem with {order}.", "This is about {order}."]
_LOWER_AFTER_GREETING = {"The", "My", "On", "This", "It", "For", "There", "When", "Since", "Tracking", "You", "A"}
_DISTRACTORS = ["I have been a customer for {n} years.", "I also bought the {other} last month and it works fine.",
                "My earlier order of the {other} was perfect.", "A friend recommended your shop.",
                "I paid by credit card.", "Your website was easy to use.", "The courier was very polite.",
                "I need it before my trip on {date2}.", "I use it every day for work.",
                "The {other} I got from you last year is still great.", "I checked the FAQ but found nothing."]


def _order_text(rng: random.Random, num: str) -> str:
    return rng.choice([f"order {num}", f"order #{num}", f"order number {num}", f"order no. {num}"])


def _ticket(rng: random.Random) -> dict[str, str]:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    brand, kind = rng.choice(_BRANDS), rng.choice(_TYPES)
    other = f"{rng.choice([b for b in _BRANDS if b != brand])} {rng.choice([t for t in _TYPES if t != kind])}"
    issue = rng.choice(list(_ISSUES))
    issue_words, issue_texts, remedies = _ISSUES[issue]
    remedy = rng.choice(remedies)
    num = str(rng.randint(10000, 99999))
    colour, colour2 = rng.sample(_COLOURS, 2)
    slots = {"first": first, "last": last, "product": f"{brand} {kind}", "type": kind, "other": other,
             "num": num, "order": _order_text(rng, num), "n": str(rng.randint(2, 12)),
             "part": rng.choice(_PARTS), "colour": colour, "colour2": colour2,
             "date": f"{rng.choice(_MONTHS)} {rng.randint(1, 28)}",
             "date2": f"{rng.choice(_MONTHS)} {rng.randint(1, 28)}"}

    def say(options: list[str]) -> str:
        return rng.choice(options).format(**slots)

    order = rng.randrange(3)
    if order:  # no purchase sentence: the issue sentence has to name the product
        issue_texts = [t for t in issue_texts if "{product}" in t]
    issue_sentence, request = say(issue_texts), say(_REMEDIES[remedy])
    distractors = [say(_DISTRACTORS) for _ in range(rng.choice([0, 1, 1, 2]))]
    if order == 0:    # purchase, issue, request
        body = [say(_PURCHASE), issue_sentence, request]
    elif order == 1:  # issue first, order number afterwards
        body = [issue_sentence, say(_ORDER_REF), request]
    else:             # order number first, product named in the issue
        body = [say(_ORDER_FIRST), issue_sentence, request]
    for sentence in distractors:
        body.insert(rng.randint(1, len(body)), sentence)
    if rng.random() < 0.4:
        body.insert(0, say(_INTROS))
        named = True
    else:
        named = False
    if rng.random() < 0.7:
        first_word = body[0].split(" ", 1)[0]
        lower = first_word in _LOWER_AFTER_GREETING
        body[0] = rng.choice(_GREETINGS) + " " + (body[0][:1].lower() + body[0][1:] if lower else body[0])
    if rng.random() < 0.4:
        body.append(rng.choice(_CLOSINGS))
    if not named or rng.random() < 0.5:
        body.append(say(_SIGNOFFS))
    article = "an" if remedy[0] in "aeiou" else "a"
    summary = f"Customer {first} wants {article} {remedy} for the {issue_words} {brand} {kind}."
    return {"text": " ".join(body), "summary": summary}


def generate(seed: int = 0, n_train: int = 4800, n_validation: int = 100,
             n_test: int = 200) -> dict[str, list[dict]]:
    """Return ``{"train", "validation", "test"}`` lists of ``{"text", "summary"}`` rows; texts are unique across
    all three splits."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: dict[str, list[dict]] = {}
    for split, n in (("train", n_train), ("validation", n_validation), ("test", n_test)):
        rows: list[dict] = []
        while len(rows) < n:
            row = _ticket(rng)
            if row["text"] not in seen:
                seen.add(row["text"])
                rows.append(row)
        out[split] = rows
    return out


def write_demo_files(folder: str | os.PathLike, seed: int = 0) -> dict[str, Path]:
    """Write ``train.jsonl``, ``validation.jsonl`` and ``test.jsonl`` (keys ``text``, ``summary``) into ``folder``."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for split, rows in generate(seed=seed).items():
        path = root / f"{split}.jsonl"
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        paths[split] = path
    return paths


def lead_baseline(rows: list[dict], n_words: int = 12) -> list[str]:
    """The "lead" summary of each row: the first ``n_words`` words of its text."""
    return [" ".join(row["text"].split()[:n_words]) for row in rows]
