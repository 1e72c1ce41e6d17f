"""Synthetic customer-support intent dataset for tuneforge's offline demo.

>>> from tuneforge.demo.dataset import generate, keyword_baseline, majority_baseline
>>> splits = generate(seed=0)
>>> [len(splits[name]) for name in ("train", "validation", "test")]
[1200, 300, 300]
>>> sorted({row["label"] for row in splits["train"]})
['account', 'billing', 'delivery', 'technical']
>>> splits == generate(seed=0)
True
>>> train, test = splits["train"], splits["test"]
>>> majority_baseline(train, test) < keyword_baseline(train, test) < 0.9
True

Every message is produced here, from hand-written templates, slot fillers and
random composition (greetings, closings, occasional typos, lower-casing). Each
message has exactly one intent: ``billing``, ``delivery``, ``technical`` or
``account``. Two things make the task hard for purely lexical methods:

* Distractors: many messages mention another intent's vocabulary as harmless
  context ("My package arrived on time, but I was charged twice") or as a bridge
  ("I paid for express shipping, but my package hasn't arrived").
* Held-out phrasing: part of validation and test is written with paraphrase
  templates and synonyms that never occur in train ("money back" instead of
  "refund", "parcel" instead of "package", "sign in" instead of "log in").

A fine-tuned pretrained sentence encoder generalises across those paraphrases;
the keyword and majority baselines below show what lexical matching alone gets.
Only the standard library is used, and output is a pure function of the seed.
"""

from __future__ import annotations

import csv
import math
import os
import random
import re
from collections import Counter
from pathlib import Path

__all__ = ["LABELS", "generate", "keyword_baseline", "majority_baseline", "write_demo_files"]

LABELS: tuple[str, ...] = ("billing", "delivery", "technical", "account")
_WEIGHTS: tuple[float, ...] = (0.30, 0.25, 0.25, 0.20)
_HELDOUT_SHARE = 0.6  # share of validation/test rows written with held-out phrasing

# Intent cores are clauses; "train" phrasing is used by every split, "heldout"
# phrasing (paraphrases, unseen synonyms) only by validation and test.
_CORES: dict[str, dict[str, list[str]]] = {
    "billing": {
        "train": [
            "I was charged twice for {order}", "I was overcharged by {amount} on my last bill",
            "my card was charged {amount} for a subscription I cancelled",
            "I still haven't received my refund for {order}",
            "I need a refund for the {amount} charge {date}",
            "my invoice shows the wrong price", "there is a fee on my bill that I don't recognise",
            "my payment was declined even though my card is valid",
            "the discount code wasn't applied to my payment", "I need a copy of the invoice for {order}",
            "my monthly subscription fee went up without notice",
            "I was billed for the {plan} plan but I'm on the basic one",
            "the refund you promised {date} never reached my card",
            "I was charged a late fee I shouldn't have",
        ],
        "heldout": [
            "I'd like my money back for {order}", "{amount} was taken from my bank twice",
            "I was debited {amount} more than the listed cost",
            "my bank statement shows two identical transactions from you",
            "you deducted {amount} after I ended my membership",
            "the total on my receipt is higher than at checkout",
            "I've been paying for two plans at once",
            "you took {amount} out of my bank account without asking",
            "I was never reimbursed for the {product} I sent back",
            "a mystery transaction of {amount} from your company appeared {date}",
        ],
    },
    "delivery": {
        "train": [
            "my package hasn't arrived yet", "{order} was supposed to be delivered {date} but nothing came",
            "the tracking for {order} hasn't updated in a week",
            "the courier delivered my package to the wrong address", "my delivery is {n} days late",
            "the package with my {product} arrived damaged", "only half of my order was delivered",
            "my {product} was shipped to my old address", "it says delivered but I have no package",
            "I need to change the shipping address for {order}", "the courier never came {date}",
            "my order has been stuck at the warehouse since {date}",
        ],
        "heldout": [
            "my parcel never showed up", "the shipment with my {product} is still not here",
            "the driver left the box at a neighbour's house",
            "the postman left a note but I was home all day",
            "my parcel has been in transit for {n} days",
            "the box came crushed and the {product} inside is dented",
            "the shipment went to a different town", "it was dispatched {date} and I still don't have it",
            "the {product} I bought never reached my doorstep", "the van never turned up {date}",
            "the carrier says it was dropped off but there is nothing at my door",
        ],
    },
    "technical": {
        "train": [
            "the app crashes every time I open it", "I get an error when I try to upload a photo",
            "the app freezes on the loading screen", "the latest update broke the search feature",
            "the website shows error {code}", "there is a bug that deletes my saved settings",
            "the app won't sync with my {device}", "the screen goes black after the update",
            "notifications stopped working on my {device}", "the page keeps loading forever",
            "the app crashes on my {device} when I tap the menu", "I see error code {code} on startup",
        ],
        "heldout": [
            "the program keeps closing itself", "there is a glitch that wipes my saved filters",
            "it just hangs on a blank white page", "the software stops responding after a few seconds",
            "the spinning wheel never goes away",
            "since the new version nothing happens when I press buttons",
            "the tool shuts down whenever I export a file", "it malfunctions whenever I switch to dark mode",
            "my {device} can't connect to your servers", "the buttons are greyed out and unresponsive",
            "the dashboard has been broken since yesterday's patch",
        ],
    },
    "account": {
        "train": [
            "I can't log in to my account", "I forgot my password and the reset link doesn't work",
            "my account has been locked", "I want to change the email on my account",
            "I want to delete my account", "I never get the verification code to log in",
            "someone changed my password without permission", "I want to update my username",
            "my profile shows someone else's name", "I'm locked out of my account after too many attempts",
            "I need to merge my two accounts", "the password reset email never arrives",
        ],
        "heldout": [
            "I can't sign in anymore", "I don't remember my credentials",
            "the one-time passcode never reaches my phone", "I think someone hijacked my login",
            "I'd like my user record and personal data erased", "I'd like to rename my user ID",
            "it says my sign-in is blocked", "my identity check keeps failing when I try to get in",
            "I signed up twice and want both logins combined", "someone else is signed in as me",
        ],
    },
}

_ASKS: dict[str, dict[str, list[str]]] = {
    "billing": {
        "train": ["Can I get a refund for {order}?", "Why was I charged twice?",
                  "Can you send me the invoice for {order}?", "Why is my bill {amount} higher this month?",
                  "How do I change the card used for payment?"],
        "heldout": ["Can I have my money back?", "Why did you take {amount} from my bank?",
                    "Could you reimburse me for {order}?", "Why is the cost higher than advertised?"],
    },
    "delivery": {
        "train": ["Where is my package?", "When will {order} be delivered?",
                  "Can you check the tracking for {order}?", "Can the courier come again tomorrow?"],
        "heldout": ["Where is my parcel?", "When will my shipment get here?",
                    "Has the box been dispatched yet?", "Can someone bring my parcel round again?"],
    },
    "technical": {
        "train": ["Why does the app keep crashing?", "How do I fix error {code}?",
                  "Is there a bug with the latest update?", "Why is the page stuck loading?"],
        "heldout": ["Why does the program keep shutting down?", "Is there a known glitch right now?",
                    "Why is nothing responding when I click?", "Are your servers down?"],
    },
    "account": {
        "train": ["How do I reset my password?", "Can you unlock my account?",
                  "How do I change my email address?", "Can you delete my account?"],
        "heldout": ["How can I sign in again?", "Can you erase my login for good?",
                    "Where do I change my credentials?", "Who else has access to my sign-in?"],
    },
}

# "Everything is fine with X" clauses: prefixed to messages of any *other* intent.
_FINE: dict[str, list[str]] = {
    "billing": ["my payment went through fine", "the invoice looks correct", "I was charged the right amount",
                "I paid my bill on time"],
    "delivery": ["my package arrived on time", "the delivery was quick", "the courier was friendly",
                 "everything was delivered"],
    "technical": ["the app works fine otherwise", "the update installed without errors",
                  "the website loads quickly"],
    "account": ["I can log in fine", "my password works", "my account settings look normal",
                "I'm logged in on my {device}"],
}

# Bridges lead into a core of the given intent using another intent's words.
_BRIDGES: dict[str, dict[str, list[str]]] = {
    "billing": {
        "train": ["after I reset my password I noticed", "when I logged into my account I saw that",
                  "my package arrived, but", "I checked the app and"],
        "heldout": ["after I signed in I saw", "the parcel came fine, but", "I looked at the program and"],
    },
    "delivery": {
        "train": ["I paid {amount} for express shipping, but", "I was charged for next-day delivery and",
                  "I logged into my account and", "the app says it's on the way, but"],
        "heldout": ["I paid extra for fast postage, but", "the charge already went through, but",
                    "my account page says complete, but"],
    },
    "technical": {
        "train": ["I was trying to pay my bill and", "when I open the tracking page",
                  "whenever I view my invoice", "on the password settings page"],
        "heldout": ["I was trying to check my bank charge and", "when I look up where my parcel is",
                    "whenever I open my membership page"],
    },
    "account": {
        "train": ["I want to view my invoice but", "I need to track my package but", "I paid for {plan} but"],
        "heldout": ["I want to see my bill but", "I need to see where my parcel is, but",
                    "I just paid for {plan}, but"],
    },
}

_GREETINGS = ["Hi,", "Hello,", "Hi there,", "Good morning,", "Hey,", "Dear support,", "Hello team,"]
_CLOSINGS = ["Thanks.", "Please help.", "Thank you!", "Any help appreciated.", "Please sort this out.",
             "This is urgent.", "Thanks in advance."]
_PRODUCTS = ["Aurora headphones", "Nimbus blender", "Vega desk lamp", "Orbit smartwatch", "Pico speaker",
             "Tundra jacket", "Halo kettle", "Zephyr fan", "Atlas backpack", "Lumen e-reader"]
_DEVICES = ["iPhone", "Android phone", "laptop", "tablet", "Mac", "Windows PC", "smart TV", "Chromebook"]
_PLANS = ["Premium", "Family", "Pro", "Plus", "Student"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]
_WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_SLOT = re.compile(r"\{(\w+)\}")
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def _fill_slot(rng: random.Random, name: str) -> str:
    if name == "order":
        number = rng.randint(10000, 99999)
        return rng.choice([f"order #{number}", f"order {number}", f"order #A{number}", "my last order"])
    if name == "amount":
        value = rng.choice([f"{rng.randint(5, 199)}.{rng.randint(0, 99):02d}", str(rng.randint(5, 250))])
        return rng.choice(["$", "€", "£"]) + value
    if name == "date":
        kind = rng.randrange(3)
        if kind == 0:
            return f"on {rng.choice(_MONTHS)} {rng.randint(1, 28)}"
        if kind == 1:
            return f"last {rng.choice(_WEEKDAYS)}"
        return rng.choice(["yesterday", "two days ago", "last week", "this morning", "on the weekend"])
    if name == "code":
        return rng.choice([str(rng.randint(100, 999)), f"E{rng.randint(10, 9999)}"])
    if name == "n":
        return str(rng.randint(2, 14))
    return rng.choice({"product": _PRODUCTS, "device": _DEVICES, "plan": _PLANS}[name])


def _fill(rng: random.Random, template: str, slots: dict[str, str]) -> str:
    # ``slots`` keeps a slot's value consistent within one message.
    def value(m: re.Match) -> str:
        return slots.get(m.group(1)) or slots.setdefault(m.group(1), _fill_slot(rng, m.group(1)))

    return _SLOT.sub(value, template)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _typo(rng: random.Random, text: str) -> str:
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha()]
    if not candidates:
        return text
    i = rng.choice(candidates)
    w = words[i]
    j = rng.randint(1, len(w) - 3)
    words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:] if rng.random() < 0.7 else w[:j] + w[j + 1:]
    return " ".join(words)


def _message(rng: random.Random, label: str, style: str) -> str:
    """One message of intent ``label``; ``style`` is "train" or "heldout" phrasing."""
    slots: dict[str, str] = {}
    core = _fill(rng, rng.choice(_CORES[label][style]), slots)
    ask = _fill(rng, rng.choice(_ASKS[label][style]), slots)
    kind = rng.random()
    if kind < 0.25 or (kind < 0.62 and " but " in core):  # avoid "..., but ... but ..."
        body = _cap(core) + "."
    elif kind < 0.45:
        other = rng.choice([name for name in LABELS if name != label])
        body = _cap(_fill(rng, rng.choice(_FINE[other]), slots)) + ", but " + core + "."
    elif kind < 0.62:
        body = _cap(_fill(rng, rng.choice(_BRIDGES[label][style]), slots)) + " " + core + "."
    elif kind < 0.80:
        body = ask
    else:
        body = _cap(core) + ". " + ask
    if rng.random() < 0.35:
        first = body.split(" ", 1)[0]
        if first != "I" and not first.startswith("I'"):
            body = body[:1].lower() + body[1:]
        body = rng.choice(_GREETINGS) + " " + body
    if rng.random() < 0.3:
        body = body + " " + rng.choice(_CLOSINGS)
    if rng.random() < 0.08:
        body = _typo(rng, body)
    if rng.random() < 0.1:
        body = body.lower().rstrip(".!")
    return body


def _label_sequence(rng: random.Random, n: int) -> list[str]:
    counts = [int(n * w) for w in _WEIGHTS]
    for i in range(n - sum(counts)):
        counts[i % len(counts)] += 1
    labels = [label for label, c in zip(LABELS, counts, strict=True) for _ in range(c)]
    rng.shuffle(labels)
    return labels


def generate(seed: int = 0, n_train: int = 1200, n_validation: int = 300,
             n_test: int = 300) -> dict[str, list[dict]]:
    """Return ``{"train", "validation", "test"}`` lists of ``{"text", "label"}`` rows.

    Texts are unique across all three splits. Train uses only "train" phrasing;
    validation and test mix it with held-out paraphrases (about 60% of rows).
    """
    rng = random.Random(seed)
    seen: set[str] = set()
    out: dict[str, list[dict]] = {}
    for split, n in (("train", n_train), ("validation", n_validation), ("test", n_test)):
        rows: list[dict] = []
        for label in _label_sequence(rng, n):
            style = "heldout" if split != "train" and rng.random() < _HELDOUT_SHARE else "train"
            for _ in range(1000):
                text = _message(rng, label, style)
                if text not in seen:
                    break
            else:  # pragma: no cover - only with absurdly large n
                raise RuntimeError(f"could not generate a new unique {label!r} message for {split!r}")
            seen.add(text)
            rows.append({"text": text, "label": label})
        out[split] = rows
    return out


def write_demo_files(folder: str | os.PathLike, seed: int = 0) -> dict[str, Path]:
    """Write ``train.csv``, ``validation.csv`` and ``test.csv`` (columns ``text,label``) into ``folder``."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for split, rows in generate(seed=seed).items():
        path = root / f"{split}.csv"
        with path.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["text", "label"])
            writer.writeheader()
            writer.writerows(rows)
        paths[split] = path
    return paths


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def _label_order(train_rows: list[dict]) -> list[str]:
    counts = Counter(row["label"] for row in train_rows)
    return sorted(counts, key=lambda label: (-counts[label], label))


def majority_baseline(train_rows: list[dict], eval_rows: list[dict]) -> float:
    """Accuracy on ``eval_rows`` of always predicting the most frequent training label."""
    if not eval_rows:
        return 0.0
    majority = _label_order(train_rows)[0]
    return sum(row["label"] == majority for row in eval_rows) / len(eval_rows)


def keyword_baseline(train_rows: list[dict], eval_rows: list[dict], k: int = 20,
                     min_count: int = 3) -> float:
    """Accuracy on ``eval_rows`` of a learned keyword matcher.

    For each label the ``k`` words with the highest smoothed log-odds ratio of
    appearing in that label's training texts versus all other training texts
    become its keywords. An eval text goes to the label with most matched
    keywords; ties go to the most frequent training label among the tied ones,
    no match at all to the overall majority label.
    """
    if not eval_rows:
        return 0.0
    order = _label_order(train_rows)
    n_label = Counter(row["label"] for row in train_rows)
    df: dict[str, Counter] = {label: Counter() for label in order}
    for row in train_rows:
        df[row["label"]].update(_words(row["text"]))
    total: Counter = Counter()
    for counts in df.values():
        total.update(counts)
    n_all = len(train_rows)
    keywords: dict[str, set[str]] = {}
    for label in order:
        n_in, n_out = n_label[label], n_all - n_label[label]
        scores = []
        for word, c_in in df[label].items():
            if c_in < min_count:
                continue
            c_out = total[word] - c_in
            log_odds = math.log((c_in + 0.5) / (n_in - c_in + 0.5))
            log_odds -= math.log((c_out + 0.5) / (n_out - c_out + 0.5))
            scores.append((log_odds, word))
        scores.sort(key=lambda item: (-item[0], item[1]))
        keywords[label] = {word for score, word in scores[:k] if score > 0}
    correct = 0
    for row in eval_rows:
        words = _words(row["text"])
        hits = {label: len(words & keywords[label]) for label in order}
        best = max(hits.values())
        prediction = order[0] if best == 0 else next(label for label in order if hits[label] == best)
        correct += prediction == row["label"]
    return correct / len(eval_rows)
