#!/usr/bin/env python
"""Train a WordPiece vocabulary (Google's vocab.txt layout) on your own corpus.

Input: a Wikipedia dump (.xml / .xml.bz2, extracted with wikiextractor as in create_pretraining_data.py),
text in Google's pretraining format (one sentence a line, blank lines between documents) or plain text
(.gz / .bz2 too). Words are cut exactly as Google's tokenizer cuts them (CJK characters split, accents
stripped when lower-casing). Prints the UNK rate and WordPieces per word on a held-out slice. See docs/data.md.

    python tools/build_vocab.py --input_file corpus.txt --output vocab.txt --vocab_size 30522
"""
from __future__ import annotations

import argparse
import sys

from smallbert.data.vocab import MAX_HELD_OUT_SENTENCES, VocabConfig, build_vocab
from smallbert.errors import cli_main
from smallbert.flags import HelpFormatter, path, set_defaults_from


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--input_file", required=True, nargs="+", action="extend",
                        help="dump, text or Google-format files; comma-separated, globs, repeatable")
    parser.add_argument("--output", required=True, type=path, help="vocab.txt to write (replaced only when complete)")
    parser.add_argument("--vocab_size", type=int, required=True,
                        help="lines of the vocab, special tokens and [unused] slots included")
    parser.add_argument("--do_lower_case", action=argparse.BooleanOptionalAction,
                        help="lower-case and strip accents, for an uncased model")
    parser.add_argument("--min_frequency", type=int, help="a pair of pieces seen fewer times is not merged")
    parser.add_argument("--limit_alphabet", type=int,
                        help="keep at most this many distinct characters, the most frequent; the rest become "
                             "[UNK]. Raise it for Chinese or Japanese")
    parser.add_argument("--num_unused", type=int,
                        help="[unusedN] slots after [PAD], for tokens added later; 99 gives Google's ids "
                             "[UNK]=100 [CLS]=101 [SEP]=102 [MASK]=103")
    parser.add_argument("--held_out", type=float,
                        help=f"fraction of sentences kept out of training to measure the vocab (at most "
                             f"{MAX_HELD_OUT_SENTENCES:,}); 0: none")
    parser.add_argument("--language", help="language of a dump, for sentence splitting")
    parser.add_argument("--processes", type=int, help="processes for extracting a dump and threads for counting")
    set_defaults_from(parser, VocabConfig)
    return parser.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = build_vocab(VocabConfig(
        input_files=tuple(args.input_file), output=args.output, vocab_size=args.vocab_size,
        do_lower_case=args.do_lower_case, min_frequency=args.min_frequency, limit_alphabet=args.limit_alphabet,
        num_unused=args.num_unused, held_out=args.held_out, processes=args.processes, language=args.language))
    print(f"wrote {report['output']}: {report['vocab_size']} tokens ({report['learned_tokens']} learned from "
          f"{report['sentences']:,} sentences in {report['seconds']} s)")
    if report["extra_unused_slots"]:
        print(f"the corpus gave too few pieces: {report['extra_unused_slots']} more [unused] slots at the end")
    if "unk_rate" in report:
        print(f"held-out ({report['held_out_sentences']:,} sentences, {report['held_out_words']:,} words): "
              f"UNK rate {report['unk_rate']:.4%}, {report['wordpieces_per_word']:.3f} WordPieces per word")
    else:
        print("no sentence held out: no UNK rate or WordPieces per word (see --held_out)")


if __name__ == "__main__":
    sys.exit(main())
