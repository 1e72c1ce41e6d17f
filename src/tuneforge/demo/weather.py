"""Generated weather bulletins: the causal-LM demo's corpus, written by our own code from a seed.

>>> from tuneforge.demo.weather import generate
>>> docs = generate(seed=0, n_train=3, n_validation=1)
>>> docs["train"][0].split(":")[0].startswith("Weather for")
True

Each bulletin follows a consistent structure with varied content (city, day, sky, temperatures that
respect high >= low, wind), so a small model trained from scratch can learn its grammar in minutes.
"""

from __future__ import annotations

import random

CITIES = ["Oslo", "Lisbon", "Nairobi", "Lima", "Osaka", "Denver", "Cairo", "Perth", "Quito", "Tallinn", "Hanoi",
          "Dakar", "Bergen", "Porto", "Leeds", "Austin"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
SKIES = ["clear skies", "sunny spells", "light rain", "heavy rain", "scattered showers", "thick fog",
         "overcast skies", "snow flurries", "thunderstorms in the afternoon", "patchy cloud"]
WINDS = ["north", "south", "east", "west", "north-west", "south-east"]
ADVICE = {"rain": "Take an umbrella.", "showers": "Take an umbrella.", "thunder": "Stay indoors if you can.",
          "snow": "Roads may be icy.", "fog": "Drive carefully.", "sun": "Wear sunscreen.",
          "clear": "A good day to be outside."}


def bulletin(rng: random.Random) -> str:
    city, day, sky = rng.choice(CITIES), rng.choice(DAYS), rng.choice(SKIES)
    low = rng.randint(-5, 22)
    high = low + rng.randint(2, 12)
    wind = rng.choice(WINDS)
    speed = rng.choice(range(5, 45, 5))
    text = (f"Weather for {city} on {day}: {sky}, with a high of {high} degrees and a low of {low}. "
            f"Wind from the {wind} at {speed} km/h.")
    advice = next((v for k, v in ADVICE.items() if k in sky), None)
    return text + (f" {advice}" if advice else "")


def generate(seed: int = 0, n_train: int = 3000, n_validation: int = 300) -> dict[str, list[str]]:
    rng = random.Random(seed)
    seen: set[str] = set()
    docs: list[str] = []
    while len(docs) < n_train + n_validation:
        doc = bulletin(rng)
        if doc not in seen:
            seen.add(doc)
            docs.append(doc)
    return {"train": docs[:n_train], "validation": docs[n_train:]}
