"""Task files → examples: each GLUE task's columns as GLUE distributes them, any labelled TSV, read and checked.

A task names, for each split file, where its text(s), label and (test) index are: by header name, or by position
for CoLA's header-less train/dev. Fields are split on tabs only (GLUE's files have no quoting, and their sentences
contain quote characters). Labels are read as strings and mapped to ids by `assign_labels` once the run knows the
label set (the task's own, --labels, train's in first-seen order, or a fine-tuned checkpoint's id2label).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np

from ..errors import SmallBertError

CLASSIFICATION, REGRESSION = "classification", "regression"
TASK_TYPES = (CLASSIFICATION, REGRESSION)
NLI_LABELS = ("entailment", "not_entailment")


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where one split file keeps its columns: header names (str), or positions (int) in a header-less file.

    text_b None: single sentences. label None: a test file. index None in a test file: its `index` column if the
    header has one, else the row number (0, 1, ...).
    """

    text_a: str | int
    text_b: str | int | None = None
    label: str | int | None = None
    index: str | int | None = None
    num_fields: int | None = None  # header-less files only: every row has exactly this many fields


@dataclasses.dataclass(frozen=True)
class Task:
    """A task: its type, label set (None: taken from train), split files and metrics.

    dev and test map split names (file `<name>.tsv`) to layouts; MNLI has two of each. `metrics` are computed on
    every dev split; `metric_for_best` (a metric name) picks the best epoch on the first dev split.
    """

    name: str
    task_type: str
    labels: tuple[str, ...] | None
    train: Layout
    dev: dict[str, Layout]
    test: dict[str, Layout]
    metrics: tuple[str, ...]
    metric_for_best: str
    column_flags: bool = False  # columns came from --text_a_column etc.: errors name the flag

    @property
    def is_pair(self) -> bool:
        return self.train.text_b is not None

    @property
    def is_regression(self) -> bool:
        return self.task_type == REGRESSION

    def dev_metric_keys(self) -> list[str]:
        """`<dev split>_<metric>` for every dev split and metric, loss included: what each epoch reports."""
        return [f"{dev}_{metric}" for dev in self.dev for metric in (*self.metrics, "loss")]


def glue_task(name: str, train: Layout, test: Layout, labels: tuple[str, ...] | None, metrics: tuple[str, ...],
              dev_names: tuple[str, ...] = ("dev",), test_names: tuple[str, ...] = ("test",)) -> Task:
    task_type = REGRESSION if labels is None else CLASSIFICATION
    return Task(name, task_type, labels, train, {d: train for d in dev_names}, {t: test for t in test_names},
                metrics, metrics[0])


BINARY = ("0", "1")
GLUE_TASKS = {t.name: t for t in (
    glue_task("sst-2", Layout("sentence", label="label"), Layout("sentence", index="index"), BINARY, ("accuracy",)),
    # CoLA's train/dev: source, label, the author's label, sentence, without a header; its test.tsv has one.
    glue_task("cola", Layout(3, label=1, num_fields=4), Layout("sentence", index="index"), BINARY,
              ("mcc", "accuracy")),
    glue_task("mrpc", Layout("#1 String", "#2 String", "Quality"), Layout("#1 String", "#2 String", index="index"),
              BINARY, ("f1", "accuracy")),
    glue_task("qqp", Layout("question1", "question2", "is_duplicate"), Layout("question1", "question2", index="id"),
              BINARY, ("f1", "accuracy")),
    glue_task("sts-b", Layout("sentence1", "sentence2", "score"), Layout("sentence1", "sentence2", index="index"),
              None, ("pearson", "spearman")),
    glue_task("mnli", Layout("sentence1", "sentence2", "gold_label"), Layout("sentence1", "sentence2", index="index"),
              ("contradiction", "entailment", "neutral"), ("accuracy",), dev_names=("dev_matched", "dev_mismatched"),
              test_names=("test_matched", "test_mismatched")),
    glue_task("qnli", Layout("question", "sentence", "label"), Layout("question", "sentence", index="index"),
              NLI_LABELS, ("accuracy",)),
    glue_task("rte", Layout("sentence1", "sentence2", "label"), Layout("sentence1", "sentence2", index="index"),
              NLI_LABELS, ("accuracy",)),
    glue_task("wnli", Layout("sentence1", "sentence2", "label"), Layout("sentence1", "sentence2", index="index"),
              BINARY, ("accuracy",)),
)}
TASK_NAMES = (*GLUE_TASKS, "tsv")
COLUMN_FLAGS = {"text_a": "--text_a_column", "text_b": "--text_b_column", "label": "--label_column"}


def get_task(name: str, task_type: str | None = None, text_a_column: str = "text_a",
             text_b_column: str | None = None, label_column: str = "label") -> Task:
    """The task `--task_name name` means; "tsv" builds one from the column flags (header names) and `task_type`
    (default classification). Raises SmallBertError naming the flag for an unknown name or type."""
    if name not in TASK_NAMES:
        raise SmallBertError(f"--task_name: {name!r} is not one of {', '.join(TASK_NAMES)}")
    if task_type is not None and task_type not in TASK_TYPES:
        raise SmallBertError(f"--task_type: {task_type!r} is not one of {', '.join(TASK_TYPES)}")
    if name != "tsv":
        task = GLUE_TASKS[name]
        if task_type is not None and task_type != task.task_type:
            raise SmallBertError(f"--task_type: {name} is a {task.task_type} task")
        return task
    task_type = task_type or CLASSIFICATION
    metrics = ("pearson", "spearman") if task_type == REGRESSION else ("accuracy", "f1", "mcc")
    layout = Layout(text_a_column, text_b_column, label_column)
    return Task("tsv", task_type, None, layout, {"dev": layout}, {"test": Layout(text_a_column, text_b_column)},
                metrics, metrics[0], column_flags=True)


@dataclasses.dataclass
class Split:
    """One split as read from its TSV, N examples.

    text_a, text_b: the raw texts (text_b None for single-sentence tasks).
    raw_labels: the label column's strings (None in a test file); labels: their ids int32 [N] or regression
    targets float32 [N], set by `assign_labels`.
    lines: the 1-based line of each example (for error messages). index: int64 [N] of a test file (what GLUE's
    submission format echoes), else None. digest: SHA-1 of the file's bytes and the columns read (cache key).
    """

    name: str
    path: str
    text_a: list[str]
    text_b: list[str] | None
    raw_labels: list[str] | None
    lines: list[int]
    index: np.ndarray | None
    digest: str
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.text_a)


def read_lines(path: str, what: str) -> tuple[bytes, list[str]]:
    """The file's bytes and its lines (split on \\n only: sentences may hold \\x0b, \\x1c or U+2028)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise SmallBertError(f"{path}: {what} not found") from None
    except OSError as err:
        raise SmallBertError(f"{path}: cannot read ({err.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise SmallBertError(f"{path}: not UTF-8 ({err.reason} at byte {err.start})") from None
    return raw, [line.rstrip("\r") for line in text.split("\n")]


def column_positions(task: Task, layout: Layout, header: list[str] | None, path: str) -> dict[str, int]:
    """{role: field position} for the roles (text_a, text_b, label, index) `layout` uses."""
    roles = {role: getattr(layout, role) for role in ("text_a", "text_b", "label", "index")}
    if header is None:
        return {role: column for role, column in roles.items() if column is not None}
    if roles["index"] is None and roles["label"] is None and "index" in header:
        roles["index"] = "index"
    positions = {}
    for role, column in roles.items():
        if column is None:
            continue
        if column not in header:
            flag = f"{COLUMN_FLAGS[role]}: " if task.column_flags and role in COLUMN_FLAGS else ""
            raise SmallBertError(f"{path}:1: {flag}no column {column!r} (the header has {', '.join(header)})")
        positions[role] = header.index(column)
    return positions


def read_split(task: Task, data_dir: str, name: str) -> Split:
    """Reads and checks `data_dir/<name>.tsv` for `task`; `name` is "train" or one of task.dev / task.test.

    Blank lines are skipped. Raises SmallBertError naming the file, line and column for a missing file or column,
    a row with the wrong number of fields, a non-integer test index or a file without rows.
    """
    layout = task.train if name == "train" else {**task.dev, **task.test}[name]
    path = os.path.join(data_dir, f"{name}.tsv")
    raw, lines = read_lines(path, f"{task.name} {name} split (--data_dir must hold {name}.tsv)")
    header = None if layout.num_fields else lines[0].split("\t")
    positions = column_positions(task, layout, header, path)
    num_fields = layout.num_fields or len(header)
    fields_named = f" ({', '.join(header)})" if header else ""
    columns = {role: [] for role in positions}
    numbers = []
    for lineno, line in enumerate(lines[0 if header is None else 1:], start=1 if header is None else 2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != num_fields:
            raise SmallBertError(f"{path}:{lineno}: malformed row: expected {num_fields} tab-separated fields"
                                 f"{fields_named}, got {len(fields)}")
        for role, position in positions.items():
            columns[role].append(fields[position])
        numbers.append(lineno)
    if not numbers:
        raise SmallBertError(f"{path}: no examples" + (" after the header" if header else ""))
    index = None
    if "label" not in positions:  # a test file: GLUE's submission format echoes its index
        values = columns.get("index") or [str(i) for i in range(len(numbers))]
        bad = next((i for i, v in enumerate(values) if not v.strip().isdigit()), None)
        if bad is not None:
            raise SmallBertError(f"{path}:{numbers[bad]}: column {header[positions['index']]!r}: index "
                                 f"{values[bad]!r} is not a non-negative integer")
        index = np.asarray([int(v) for v in values], np.int64)
    spec = f"|{layout.text_a}|{layout.text_b}|{layout.label}"  # another column choice is another cache key
    return Split(name=name, path=path, text_a=columns["text_a"], text_b=columns.get("text_b"),
                 raw_labels=[v.strip() for v in columns["label"]] if "label" in columns else None,
                 lines=numbers, index=index, digest=hashlib.sha1(raw + spec.encode()).hexdigest())


def label_names_from(train: Split) -> tuple[str, ...]:
    """train's labels in the order first seen, or in numeric order when they are all integers (so "0"/"1" keep
    their ids whatever row comes first)."""
    names = tuple(dict.fromkeys(train.raw_labels))
    if all(n.lstrip("-").isdigit() for n in names):
        return tuple(sorted(names, key=int))
    return names


def assign_labels(task: Task, split: Split, names: tuple[str, ...] | None, source: str) -> None:
    """Sets split.labels from split.raw_labels: ids into `names` (classification) or floats (regression).

    `source` says where `names` came from, for the error. Raises SmallBertError naming the file, line and column
    for a label outside `names` or a non-numeric regression target.
    """
    column = task.train.label if split.name == "train" else task.dev.get(split.name, task.train).label
    where = f"column {column!r}" if isinstance(column, str) else f"field {column + 1}"
    if task.is_regression:
        values = np.empty(len(split), np.float32)
        for row, value in enumerate(split.raw_labels):
            try:
                values[row] = float(value)
            except ValueError:
                values[row] = np.nan
            if not np.isfinite(values[row]):
                raise SmallBertError(f"{split.path}:{split.lines[row]}: {where}: {value!r} is not a number "
                                     f"(a {task.name} regression target)")
        split.labels = values
        return
    ids = {name: i for i, name in enumerate(names)}
    for row, value in enumerate(split.raw_labels):
        if value not in ids:
            raise SmallBertError(f"{split.path}:{split.lines[row]}: {where}: label {value!r} is not one of "
                                 f"{source}'s labels ({', '.join(names)})")
    split.labels = np.asarray([ids[v] for v in split.raw_labels], np.int32)
