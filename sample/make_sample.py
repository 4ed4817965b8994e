"""Writes the bundled sample that tools/quickstart.py runs on; all text is made up here, none is copied.

    python sample/make_sample.py [--output_dir DIR]   # (re)writes the files below into sample/ (or DIR),
                                                      # byte-identical every time

- `wiki/sample-pages-articles.xml.bz2`: a MediaWiki export of articles about an invented river valley (towns,
  rivers, people, animals, festivals), written in wikitext with the markup real dumps have (infobox templates,
  links, bold, references, headings, categories) plus a redirect and an empty page, which the extractor drops.
- `vocab.txt`: an uncased WordPiece vocabulary of that text and the SST-2 sample (see `build_vocab`).
- `SST-2/{train,dev,test}.tsv`: GLUE's SST-2 format (lower-cased, space-separated tokens; `sentence<TAB>label`,
  test `index<TAB>sentence`) with invented film-review phrases; label 1 = positive.
- `bert_config.json`: the tiny model the quickstart pretrains (2 layers, hidden 128, this vocab's size).
"""
from __future__ import annotations

import argparse
import bz2
import json
import os
import random
import re
from collections import Counter
from xml.sax.saxutils import escape

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20261122

# --- the invented world -----------------------------------------------------------------------------------------
REGION = "Vell"
RIVERS = ["Vell", "Amber", "Sorrow", "Kestle", "Orran", "Lune", "Mirrow", "Tallis", "Brede", "Ossel"]
TOWN_START = ["Ald", "Bran", "Cor", "Dun", "El", "Fen", "Gar", "Hol", "Ish", "Kel", "Lor", "Mor", "Nor", "Ost",
              "Pell", "Quen", "Ros", "Stan", "Tor", "Ull", "Wyn", "Yar"]
TOWN_END = ["mere", "ford", "wick", "by", "holm", "stead", "ton", "bridge", "moor", "haven", "dale", "well"]
FIRST_NAMES = ["Ada", "Bertil", "Clara", "Dorian", "Edda", "Falk", "Greta", "Henrik", "Ilse", "Jonas", "Karin",
               "Leopold", "Mira", "Nils", "Oda", "Pavel", "Runa", "Sven", "Thea", "Ulrich", "Vera", "Wendel"]
SURNAMES = ["Ambrose", "Brandt", "Castell", "Dorn", "Eberle", "Fischer", "Gallo", "Hartwig", "Iversen", "Jaeger",
            "Kohl", "Lindqvist", "Marek", "Novak", "Oster", "Pruett", "Quist", "Rasmus", "Stahl", "Tamm"]
PROFESSIONS = ["painter", "engineer", "botanist", "composer", "mapmaker", "physician", "poet", "architect",
               "astronomer", "teacher", "bridge builder", "historian"]
WORKS = {"painter": "large paintings of the river in winter", "engineer": "the first steam pumps in the valley",
         "botanist": "a survey of the wild orchids of the upper valley", "composer": "the choral cycle Songs of the Ford",
         "mapmaker": "the first accurate map of the valley", "physician": "a hospital for river workers",
         "poet": "short poems about farm life", "architect": "the covered market halls of several towns",
         "astronomer": "careful records of comets seen from the hills", "teacher": "the first public school",
         "bridge builder": "stone bridges that still carry traffic", "historian": "a history of the old toll roads"}
INDUSTRIES = ["a water mill", "a wool market", "a brewery", "a paper mill", "a salt works", "a ferry crossing",
              "a glass works", "a timber yard", "a monastery", "a river port"]
BUILDINGS = ["church", "town hall", "library", "clock tower", "grain store", "theatre", "museum", "bridge"]
ADJECTIVES = ["old", "small", "tall", "white", "narrow", "wooden", "stone", "red", "broad", "quiet"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
ANIMALS = [("heron", "bird", "reed beds"), ("otter", "mammal", "river banks"), ("newt", "amphibian", "ponds"),
           ("kingfisher", "bird", "slow streams"), ("vole", "mammal", "meadows"), ("trout", "fish", "cold pools"),
           ("lizard", "reptile", "dry stone walls"), ("swift", "bird", "church towers"), ("beetle", "insect", "old oaks"),
           ("bat", "mammal", "barns"), ("crayfish", "crustacean", "gravel beds"), ("owl", "bird", "woodland edges")]
COLOURS = ["grey", "brown", "spotted", "golden", "dark", "pale", "striped", "green"]
FOODS = ["apples", "barley bread", "smoked fish", "honey cakes", "plum wine", "cheese", "lamb stew", "pears"]
SEASONS = ["spring", "summer", "autumn", "winter"]


def pick(rng: random.Random, items):
    return items[rng.randrange(len(items))]


def with_article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def person_name(rng: random.Random) -> str:
    return f"{pick(rng, FIRST_NAMES)} {pick(rng, SURNAMES)}"


def cite(rng: random.Random, topic: str) -> str:
    return f"<ref>{person_name(rng)}, ''Notes on {topic}'', Vell Press, {rng.randrange(1950, 2020)}.</ref>"


def town_article(rng: random.Random, town: str, towns: list[str]) -> tuple[str, str]:
    river, other = pick(rng, RIVERS), pick(rng, [t for t in towns if t != town])
    founded, population = rng.randrange(1100, 1700), rng.randrange(800, 40000)
    builder, industry, building = person_name(rng), pick(rng, INDUSTRIES), pick(rng, BUILDINGS)
    lines = [
        f"{{{{Infobox settlement\n| name = {town}\n| region = {REGION}\n| population = {population}\n}}}}",
        f"'''{town}''' is a {pick(rng, ['small', 'market', 'river', 'hill'])} town in the [[{REGION} Valley]], on the "
        f"{pick(rng, ['north', 'south', 'east', 'west'])} bank of the [[{river} (river)|{river}]]. It had a "
        f"population of {population:,} at the last census.{cite(rng, town)}",
        "",
        "== History ==",
        f"The town grew around {industry} that was first recorded in {founded}. In {founded + rng.randrange(40, 300)} "
        f"a fire destroyed most of the wooden houses, and the town was rebuilt in stone. The {building} was designed "
        f"by [[{builder}]] and finished in {founded + rng.randrange(300, 600)}. During the long winters the river "
        f"froze, and traders crossed the ice with carts of {pick(rng, FOODS)}.",
        "",
        "== Geography ==",
        f"{town} lies about {rng.randrange(4, 60)} kilometres from [[{other}]]. The land around it is "
        f"{pick(rng, ['flat and wet', 'hilly', 'covered in orchards', 'mostly pasture', 'thickly wooded'])}, and the "
        f"{pick(rng, ANIMALS)[0]} is often seen near the water. Summers are warm and short; snow usually falls "
        f"from {pick(rng, ['November', 'December'])} until {pick(rng, ['February', 'March'])}.",
        "",
        "== Culture ==",
        f"A market is held in the main square every {pick(rng, DAYS)}. The town is known for its "
        f"{pick(rng, FOODS)}, and each {pick(rng, SEASONS)} it holds a festival with music, dancing and a boat race "
        f"on the {river}. The {pick(rng, ADJECTIVES)} {pick(rng, BUILDINGS)} now houses a collection of old tools "
        f"and photographs.",
        "",
        f"[[Category:Towns in the {REGION} Valley]]",
    ]
    return town, "\n".join(lines)


def river_article(rng: random.Random, river: str, towns: list[str]) -> tuple[str, str]:
    into, length = pick(rng, [r for r in RIVERS if r != river]), rng.randrange(12, 240)
    passes = rng.sample(towns, 3)
    lines = [
        f"The '''{river}''' is a river of the [[{REGION} Valley]]. It rises in the "
        f"{pick(rng, ['Grey Hills', 'High Moor', 'Stone Forest', 'Cold Fells'])} and flows "
        f"{pick(rng, ['north', 'south', 'east', 'west'])} for about {length} kilometres before it joins the "
        f"[[{into} (river)|{into}]].{cite(rng, river)}",
        "",
        "== Course ==",
        f"After leaving the hills the river passes [[{passes[0]}]], [[{passes[1]}]] and [[{passes[2]}]]. Its water "
        f"is {pick(rng, ['clear and cold', 'brown with peat', 'slow and deep', 'fast over stones'])}. Several old "
        f"mills stand on its banks, and one of them still grinds flour for the {pick(rng, DAYS)} market.",
        "",
        "== Wildlife ==",
        f"The {pick(rng, ANIMALS)[0]} and the {pick(rng, ANIMALS)[0]} live along the river. In {pick(rng, SEASONS)} "
        f"large numbers of birds rest on the gravel islands. Fishing has been limited since {rng.randrange(1960, 2015)} "
        f"to protect the young fish.",
        "",
        "[[Category:Rivers of the Vell Valley]]",
    ]
    return f"{river} (river)", "\n".join(lines)


def person_article(rng: random.Random, name: str, towns: list[str]) -> tuple[str, str]:
    born = rng.randrange(1700, 1950)
    died = born + rng.randrange(40, 95)
    profession, home = pick(rng, PROFESSIONS), pick(rng, towns)
    lines = [
        f"'''{name}''' ({born} – {died}) was {with_article(profession)} from [[{home}]], best known for "
        f"{WORKS[profession]}.{cite(rng, name)}",
        "",
        "== Life ==",
        f"{name.split()[0]} grew up in a family of {pick(rng, ['farmers', 'millers', 'boatmen', 'weavers', 'teachers'])}"
        f" and left school at the age of {rng.randrange(12, 18)}. After some years of work in "
        f"[[{pick(rng, towns)}]], {name.split()[0]} returned home and began the work that made the name known. "
        f"Letters from this time describe long walks along the {pick(rng, RIVERS)} and evenings spent reading.",
        "",
        "== Legacy ==",
        f"A street in {home} is named after {name.split()[0]}, and the {pick(rng, BUILDINGS)} there keeps a small "
        f"exhibition. In {died + rng.randrange(10, 60)} a prize for young {profession}s was founded in the same name.",
        "",
        f"[[Category:People from {home}]]",
    ]
    return name, "\n".join(lines)


def animal_article(rng: random.Random, animal: tuple[str, str, str]) -> tuple[str, str]:
    name, kind, habitat = animal
    colour, food = pick(rng, COLOURS), pick(rng, ["insects", "small fish", "seeds", "worms", "snails", "berries"])
    title = f"{REGION} {name}"
    lines = [
        f"The '''{title}''' is {with_article(colour)} {kind} found in the {habitat} of the [[{REGION} Valley]]. "
        f"It feeds mainly on {food}.{cite(rng, title)}",
        "",
        "== Description ==",
        f"Adults are about {rng.randrange(3, 90)} centimetres long. The young are paler than the adults and stay "
        f"close to the {habitat} during their first {pick(rng, SEASONS)}. It is most active at "
        f"{pick(rng, ['dawn', 'dusk', 'night', 'midday'])}.",
        "",
        "== Status ==",
        f"The {name} was common until the {rng.randrange(190, 200)}0s, when many {habitat} were cleared. Local "
        f"groups now count the animals every year, and numbers have slowly risen again.",
        "",
        "[[Category:Animals of the Vell Valley]]",
    ]
    return title, "\n".join(lines)


def wiki_pages(rng: random.Random) -> list[tuple[str, str]]:
    towns = sorted({a + b for a in TOWN_START for b in TOWN_END})
    towns = rng.sample(towns, 60)
    people = sorted({person_name(rng) for _ in range(60)})
    pages = [town_article(rng, town, towns) for town in towns]
    pages += [river_article(rng, river, towns) for river in RIVERS]
    pages += [person_article(rng, name, towns) for name in people]
    pages += [animal_article(rng, animal) for animal in ANIMALS]
    rng.shuffle(pages)
    pages.append((f"{REGION} River", f"#REDIRECT [[{REGION} (river)]]"))  # dropped by the extractor
    pages.append(("Empty page", ""))  # likewise
    return pages


def mediawiki_xml(pages: list[tuple[str, str]]) -> str:
    """A MediaWiki export (the format of enwiki-*-pages-articles.xml) holding `pages` as namespace-0 articles."""
    out = ['<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">',
           "  <siteinfo>", "    <sitename>Vellpedia</sitename>", "    <dbname>vellwiki</dbname>",
           "    <base>https://vell.example/wiki/Main_Page</base>", "    <generator>MediaWiki 1.41.0</generator>",
           "    <case>first-letter</case>", "    <namespaces>",
           '      <namespace key="0" case="first-letter" />',
           '      <namespace key="10" case="first-letter">Template</namespace>',
           '      <namespace key="14" case="first-letter">Category</namespace>',
           "    </namespaces>", "  </siteinfo>"]
    for page_id, (title, text) in enumerate(pages, start=1):
        redirect = f'    <redirect title="{escape(text[len("#REDIRECT [["):-2])}" />' if text.startswith("#REDIRECT") else None
        out += ["  <page>", f"    <title>{escape(title)}</title>", "    <ns>0</ns>", f"    <id>{page_id}</id>"]
        out += [redirect] if redirect else []
        out += ["    <revision>", f"      <id>{1000 + page_id}</id>", "      <timestamp>2026-01-01T00:00:00Z</timestamp>",
                "      <model>wikitext</model>", "      <format>text/x-wiki</format>",
                f'      <text bytes="{len(text.encode())}" xml:space="preserve">{escape(text)}</text>',
                "    </revision>", "  </page>"]
    out.append("</mediawiki>")
    return "\n".join(out) + "\n"


# --- SST-2-style reviews ----------------------------------------------------------------------------------------
POSITIVE = ["charming", "moving", "funny", "beautiful", "clever", "warm", "gripping", "delightful", "brilliant",
            "tender", "sharp", "wonderful", "lively", "heartfelt", "smart"]
NEGATIVE = ["dull", "tedious", "clumsy", "boring", "flat", "lifeless", "messy", "predictable", "awful", "bland",
            "shallow", "tiresome", "confused", "sloppy", "weak"]
SUBJECTS = ["the film", "this movie", "the story", "the script", "the cast", "the direction", "the ending",
            "the lead performance", "the soundtrack", "the dialogue", "the whole thing", "the second half"]
NOUNS = ["film", "comedy", "drama", "thriller", "story", "debut", "picture", "romance", "documentary"]
POS_CLOSERS = ["a pleasure from start to finish", "worth every minute", "one of the best of the year",
               "easy to recommend", "the kind of film you want to see twice"]
NEG_CLOSERS = ["a waste of a good cast", "hard to sit through", "one of the worst of the year",
               "easy to forget", "the kind of film you leave early"]


def review(rng: random.Random, label: int) -> str:
    good, bad = (POSITIVE, NEGATIVE) if label else (NEGATIVE, POSITIVE)
    closers = POS_CLOSERS if label else NEG_CLOSERS
    form = rng.randrange(7)
    if form == 0:
        first, second = rng.sample(good, 2)
        text = f"a {first} and {second} {pick(rng, NOUNS)} ."
    elif form == 1:
        first, second = rng.sample(SUBJECTS, 2)
        text = f"{first} is {pick(rng, good)} , and {second} is even more {pick(rng, good)} ."
    elif form == 2:
        text = f"{pick(rng, SUBJECTS)} is never {pick(rng, bad)} ; it is {pick(rng, closers)} ."
    elif form == 3:
        text = f"for all its {pick(rng, bad)} moments , {pick(rng, SUBJECTS)} is {pick(rng, good)} ."
    elif form == 4:  # the only sentiment word is negated: word order matters
        text = f"{pick(rng, SUBJECTS)} is not {pick(rng, bad)} at all ."
    elif form == 5:
        text = f"i expected {pick(rng, SUBJECTS)} to be {pick(rng, bad)} , but it is {pick(rng, good)} ."
    else:
        text = f"{pick(rng, closers)} ."
    return text


def sst2_rows(rng: random.Random, count: int) -> list[tuple[str, int]]:
    rows = []
    for _ in range(count):
        label = rng.randrange(2)
        rows.append((review(rng, label), label))
    return rows


# --- writing ----------------------------------------------------------------------------------------------------
def build_vocab(texts: list[str], path: str) -> int:
    """Writes an uncased WordPiece vocabulary for `texts` and returns its size: the specials, every word (by
    frequency, then alphabetically) and every character alone and as a "##" continuation, so any unseen word
    still splits into known pieces. Words come from BERT's basic tokenization (lower-case, accents stripped,
    punctuation split) as the Rust `tokenizers` implements it.
    """
    from tokenizers import normalizers, pre_tokenizers

    normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts = Counter(word for text in texts
                     for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    words = sorted(counts, key=lambda word: (-counts[word], word))
    chars = sorted({char for word in words for char in word})
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    tokens += [char for char in chars if char not in counts] + ["##" + char for char in chars]
    write_text(path, "".join(token + "\n" for token in tokens))
    return len(tokens)


def plain_text(wikitext: str) -> str:
    """Roughly what the extractor keeps of our wikitext: no templates, references, categories or markup."""
    text = re.sub(r"\{\{.*?\}\}|<ref>.*?</ref>|\[\[Category:[^\]]*\]\]|#REDIRECT", "", wikitext, flags=re.S)
    text = re.sub(r"\[\[(?:[^\]|]*\|)?([^\]]*)\]\]", r"\1", text)  # [[target|label]] -> label
    return re.sub(r"'{2,}|=+", "", text)


def write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default=HERE, help="where to write (default: this directory)")
    out = parser.parse_args(argv).output_dir
    rng = random.Random(SEED)
    pages = wiki_pages(rng)
    dump = os.path.join(out, "wiki", "sample-pages-articles.xml.bz2")
    os.makedirs(os.path.dirname(dump), exist_ok=True)
    with open(dump, "wb") as f:
        f.write(bz2.compress(mediawiki_xml(pages).encode("utf-8"), 9))

    splits = {"train": sst2_rows(rng, 800), "dev": sst2_rows(rng, 200), "test": sst2_rows(rng, 100)}
    for split in ("train", "dev"):
        write_text(os.path.join(out, "SST-2", f"{split}.tsv"),
                   "sentence\tlabel\n" + "".join(f"{s}\t{label}\n" for s, label in splits[split]))
    write_text(os.path.join(out, "SST-2", "test.tsv"),
               "index\tsentence\n" + "".join(f"{i}\t{s}\n" for i, (s, _) in enumerate(splits["test"])))

    texts = [plain_text(text) for _, text in pages] + [s for rows in splits.values() for s, _ in rows]
    vocab_size = build_vocab(texts, os.path.join(out, "vocab.txt"))
    config = {"vocab_size": vocab_size, "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 512, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
              "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 128, "type_vocab_size": 2,
              "initializer_range": 0.02}
    write_text(os.path.join(out, "bert_config.json"), json.dumps(config, indent=2) + "\n")
    print(f"{len(pages)} pages, vocab {vocab_size}, SST-2 rows {', '.join(f'{k} {len(v)}' for k, v in splits.items())}")


if __name__ == "__main__":
    main()
