"""Wikipedia dump (or text corpus) → MindRecord shards of BERT MLM + NSP instances.

Google's flag names and defaults, so existing recipes carry over; the input may be a Wikipedia
dump (.xml / .xml.bz2, extracted with wikiextractor) or text files in Google's format (one
sentence per line, a blank line between documents). Output: OUTPUT_DIR/part-*.mindrecord and
metadata.json (flags, vocab hash, statistics). See docs/data.md.

    python tools/create_pretraining_data.py --input_file enwiki-latest-pages-articles.xml.bz2 \\
        --output_dir data/wiki128 --vocab_file vocab.txt --do_lower_case --max_seq_length 128 \\
        --max_predictions_per_seq 20 --dupe_factor 5 --processes 8
"""
from __future__ import annotations

import argparse
import logging
import sys
import time

from smallbert.data.instances import InstanceConfig
from smallbert.data.pipeline import PipelineConfig, create_pretraining_data
from smallbert.errors import cli_main
from smallbert.flags import HelpFormatter, boolean, path, set_defaults_from


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    flag = dict(nargs="?", const=True, type=boolean, metavar="BOOL")
    io = parser.add_argument_group("input and output")
    io.add_argument("--input_file", required=True, action="append",
                    help="dump (.xml, .xml.bz2) or text files; comma-separated, globs, repeatable")
    io.add_argument("--output_dir", required=True, type=path, help="new (or empty) directory for the shards")
    io.add_argument("--overwrite", action="store_true",
                    help="replace an earlier run's shards and metadata in --output_dir (of this --shard_index); "
                         "other files there are still refused")
    io.add_argument("--vocab_file", required=True, type=path,
                    help="BERT vocab.txt (must hold [UNK] [CLS] [SEP] [MASK])")
    io.add_argument("--do_lower_case", **flag,
                    help="lower-case and strip accents: true for uncased vocabs (--do_lower_case=false or "
                         "--nodo_lower_case for cased)")
    io.add_argument("--nodo_lower_case", dest="do_lower_case", action="store_false", help=argparse.SUPPRESS)
    io.add_argument("--encoding", help="encoding of text inputs; dumps are always UTF-8")
    io.add_argument("--encoding_errors", choices=("replace", "strict"),
                    help="replace: drop undecodable bytes and warn with the count and the first file:line; "
                         "strict: stop at the first such line")
    io.add_argument("--language", help="language of the dump, for sentence splitting (ISO 639 code)")
    io.add_argument("--extract_only", action="store_true",
                    help="only write the extracted text (OUTPUT_DIR/corpus.txt, Google's text format)")
    algo = parser.add_argument_group("instances (Google's flags)")
    algo.add_argument("--max_seq_length", type=int, help="tokens per instance")
    algo.add_argument("--max_predictions_per_seq", type=int, help="masked positions kept")
    algo.add_argument("--masked_lm_prob", type=float, help="fraction of tokens masked")
    algo.add_argument("--dupe_factor", type=int, help="times each document is used, with other masks and splits")
    algo.add_argument("--short_seq_prob", type=float, help="probability of a shorter target length")
    algo.add_argument("--random_seed", type=int, help="seed")
    algo.add_argument("--do_whole_word_mask", **flag, help="mask all WordPieces of a word together")
    algo.add_argument("--chinese_whole_word_mask", action="store_true",
                      help="also mask Chinese words whole (segmented with rjieba: pip install 'smallbert[chinese]'); "
                           "implies --do_whole_word_mask")
    algo.add_argument("--dynamic_masking", **flag,
                      help="store unmasked instances; the pretraining reader masks them anew every epoch")
    algo.add_argument("--mlm_only", default=False, **flag,
                      help="no NSP pairs: the text as one stream (a [SEP] between documents) cut into single "
                           "segments of exactly --max_seq_length tokens, for run_pretrain.py --mlm_only; "
                           "--short_seq_prob is not used (default false)")
    run = parser.add_argument_group("scale")
    run.add_argument("--processes", type=int, help="worker processes")
    run.add_argument("--documents_per_chunk", type=int,
                     help="documents per shard; the window for shuffling and random next sentences (part of the "
                          "output's definition, like the seed)")
    run.add_argument("--num_shards", type=int, help="split the work in this many parts, for several machines")
    run.add_argument("--shard_index", type=int, help="the part this run makes, in [0, num_shards)")
    set_defaults_from(parser, PipelineConfig, InstanceConfig)
    return parser.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    config = PipelineConfig(
        input_files=tuple(args.input_file), output_dir=args.output_dir, vocab_file=args.vocab_file,
        do_lower_case=args.do_lower_case, random_seed=args.random_seed, processes=args.processes,
        documents_per_chunk=args.documents_per_chunk, num_shards=args.num_shards, shard_index=args.shard_index,
        language=args.language, extract_only=args.extract_only, chinese_whole_word_mask=args.chinese_whole_word_mask,
        overwrite=args.overwrite, encoding=args.encoding, encoding_errors=args.encoding_errors,
        instances=InstanceConfig(max_seq_length=args.max_seq_length,
                                 max_predictions_per_seq=args.max_predictions_per_seq,
                                 masked_lm_prob=args.masked_lm_prob, short_seq_prob=args.short_seq_prob,
                                 dupe_factor=args.dupe_factor,
                                 do_whole_word_mask=args.do_whole_word_mask or args.chinese_whole_word_mask,
                                 dynamic_masking=args.dynamic_masking, mlm_only=args.mlm_only))
    start = time.time()
    result = create_pretraining_data(config)
    seconds = time.time() - start
    if args.extract_only:
        print(f"wrote {result['corpus']}: {result['input_counts'].get('documents_read', 0)} documents in {seconds:.1f}s")
        return
    stats = result["statistics"]
    print(f"wrote {len(result['files'])} shards to {args.output_dir}: {stats['instances']} instances from "
          f"{stats['documents']} documents in {seconds:.1f}s ({stats['instances'] / max(seconds, 1e-9):.0f}/s); "
          f"masked {stats['masked_fraction']:.3f}, " + (
              f"{stats['tokens'] / stats['instances']:.1f} tokens per packed segment" if args.mlm_only else
              f"random next {stats['next_sentence_random_fraction']:.3f}"))


if __name__ == "__main__":
    sys.exit(main())
