"""A straightforward, single-process rendering of Google's `create_pretraining_data.py`, the baseline
of `bench/data_pipeline.py` and the independent check of `smallbert.data.instances` in the tests.

Like Google's script it reads the whole corpus into memory, tokenizes it with the pure-Python
tokenizer (`transformers`' port of Google's), works on token strings and uses `random.Random`
directly (including `rng.shuffle`). It writes nothing: Google's 3,200 instances/s figure in the
issue also leaves out its TFRecord writes.
"""
from __future__ import annotations

import random


def read_documents(paths: list[str], tokenizer) -> list[list[list[str]]]:
    """Google's reader: one sentence per line, blank lines between documents, all in memory.
    (Each file's end also ends its document, as in smallbert's reader.)"""
    documents: list[list[list[str]]] = []
    for path in paths:
        documents.append([])
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                if not line:
                    documents.append([])
                tokens = tokenizer.tokenize(line)
                if tokens:
                    documents[-1].append(tokens)
    return [d for d in documents if d]


def mask_tokens(tokens, masked_lm_prob, max_predictions, vocab_words, whole_word, rng):
    candidates = []
    for i, token in enumerate(tokens):
        if token in ("[CLS]", "[SEP]"):
            continue
        if whole_word and candidates and token.startswith("##"):
            candidates[-1].append(i)
        else:
            candidates.append([i])
    rng.shuffle(candidates)
    output = list(tokens)
    num_to_predict = min(max_predictions, max(1, int(round(len(tokens) * masked_lm_prob))))
    masked = []
    covered = set()
    for group in candidates:
        if len(masked) >= num_to_predict:
            break
        if len(masked) + len(group) > num_to_predict or any(i in covered for i in group):
            continue
        for i in group:
            covered.add(i)
            if rng.random() < 0.8:
                replacement = "[MASK]"
            elif rng.random() < 0.5:
                replacement = tokens[i]
            else:
                replacement = vocab_words[rng.randint(0, len(vocab_words) - 1)]
            output[i] = replacement
            masked.append((i, tokens[i]))
    masked.sort()
    return output, [i for i, _ in masked], [t for _, t in masked]


def truncate(tokens_a, tokens_b, max_num_tokens, rng):
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def document_instances(documents, index, cfg, vocab_words, rng):
    document = documents[index]
    max_num_tokens = cfg["max_seq_length"] - 3
    target = max_num_tokens
    if rng.random() < cfg["short_seq_prob"]:
        target = rng.randint(2, max_num_tokens)
    out = []
    chunk, length, i = [], 0, 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i])
        if i == len(document) - 1 or length >= target:
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            tokens_a = [t for s in chunk[:a_end] for t in s]
            tokens_b = []
            if len(chunk) == 1 or rng.random() < 0.5:
                is_random = True
                for _ in range(10):
                    other = rng.randint(0, len(documents) - 1)
                    if other != index:
                        break
                start = rng.randint(0, len(documents[other]) - 1)
                for sentence in documents[other][start:]:
                    tokens_b.extend(sentence)
                    if len(tokens_b) >= target - len(tokens_a):
                        break
                i -= len(chunk) - a_end
            else:
                is_random = False
                tokens_b = [t for s in chunk[a_end:] for t in s]
            truncate(tokens_a, tokens_b, max_num_tokens, rng)
            tokens = ["[CLS]"] + tokens_a + ["[SEP]"] + tokens_b + ["[SEP]"]
            segment_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
            tokens, positions, labels = mask_tokens(tokens, cfg["masked_lm_prob"], cfg["max_predictions_per_seq"],
                                                    vocab_words, cfg["do_whole_word_mask"], rng)
            out.append({"tokens": tokens, "segment_ids": segment_ids, "is_random_next": is_random,
                        "masked_lm_positions": positions, "masked_lm_labels": labels})
            chunk, length = [], 0
        i += 1
    return out


def create_instances(documents, cfg, vocab_words, seed):
    """All instances of the corpus, as Google makes them with `random.Random(seed)`."""
    rng = random.Random(seed)
    rng.shuffle(documents)
    instances = []
    for _ in range(cfg["dupe_factor"]):
        for index in range(len(documents)):
            instances.extend(document_instances(documents, index, cfg, vocab_words, rng))
    rng.shuffle(instances)
    return instances
