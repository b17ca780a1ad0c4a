"""Probe tasks: which rows a task reads, their labels, and the groups that splits respect.

A task reads the word-final rows of a corpus split (`probe.rows.ProbeRows`): word tasks read
the rows whose word has the label (a verb for `agreement`, a noun for `category`, ...), fact
tasks read the last token of a person's name at its **first mention in each document**, so no
statement of that person's facts is in the context yet. Groups are word types for word tasks
and people for fact tasks: a split never puts one group on both sides.

>>> sorted(SUITES)
['facts', 'semantics', 'syntax']
>>> [t.name for t in resolve_tasks("syntax,city")]
['pos', 'depth', 'agreement', 'city']
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workbench.world.facts import World
from workbench.world.labels import ANIMACY, CATEGORIES, NUMBERS, POS_TAGS, SENTIMENTS

KINDS = ("syntax", "semantics", "facts")
MAX_DEPTH = 6  # deeper words share the class "6+"


@dataclass(frozen=True)
class Task:
    """One probing task.

    Attributes:
        name: task name (`pos`, `city`, ...).
        kind: `syntax`, `semantics` or `facts`.
        label: the corpus label array it reads (`pos`, `number`, `person`, ...).
        reads: the token positions it reads, in words (for reports).
        classes: class names for word tasks (fact classes come from the world).
        relation: for fact tasks, the person's attribute (`city`, `job`, ..., `country`).
    """

    name: str
    kind: str
    label: str
    reads: str
    classes: tuple[str, ...] = ()
    relation: str | None = None

    @property
    def group(self) -> str:
        """What a split keeps together: `person` for fact tasks, else `word` (type)."""
        return "person" if self.kind == "facts" else "word"


@dataclass
class Examples:
    """The rows a task reads, with labels and groups.

    Attributes:
        rows: indices into the `ProbeRows` (ascending).
        y: class index per row.
        groups: group id per row (word type or person).
        classes: class names (`y` indexes them).
    """

    rows: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    classes: list[str]


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("pos", "syntax", "pos", "every word with a part of speech", POS_TAGS),
    Task("depth", "syntax", "depth", "every word of a grammar sentence (depth in the parse "
         f"tree, {MAX_DEPTH}+ merged)", tuple(str(d) for d in range(MAX_DEPTH)) + (
             f"{MAX_DEPTH}+",)),
    Task("agreement", "syntax", "number", "finite verbs (the number of their subject)",
         NUMBERS),
    Task("category", "semantics", "category", "nouns and names (their category)",
         CATEGORIES),
    Task("animacy", "semantics", "animacy", "nouns and names", ANIMACY),
    Task("sentiment", "semantics", "sentiment", "adjectives", SENTIMENTS),
    *(Task(rel, "facts", "person", "the last token of a person's name at its first mention "
           f"in each document (label: the person's {rel})", relation=rel)
      for rel in ("city", "job", "pet", "food", "country")),
)}
SUITES: dict[str, list[str]] = {k: [n for n, t in TASKS.items() if t.kind == k] for k in KINDS}


def resolve_tasks(spec: str | list[str]) -> list[Task]:
    """Tasks from a comma-separated list of suite names (`syntax`) and task names (`pos`)."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    out: list[str] = []
    for name in names:
        if not name:
            continue
        if name in SUITES:
            out += SUITES[name]
        elif name in TASKS:
            out.append(name)
        else:
            raise ValueError(f"unknown probe task {name!r}; choose suites {list(SUITES)} or "
                             f"tasks {list(TASKS)}")
    if not out:
        raise ValueError(f"no probe task in {spec!r}; choose suites {list(SUITES)} or tasks "
                         f"{list(TASKS)}")
    return [TASKS[n] for n in dict.fromkeys(out)]


def first_mentions(person: np.ndarray, doc: np.ndarray) -> np.ndarray:
    """Rows ending the first mention of each person in each document.

    `person` and `doc` are per row, in corpus order; a mention is a run of consecutive rows
    with the same person id, and it ends at its last row (the last token of the name).
    """
    person = np.asarray(person)
    doc = np.asarray(doc)
    same_next = np.zeros(len(person), dtype=bool)
    same_next[:-1] = (person[1:] == person[:-1]) & (doc[1:] == doc[:-1])
    ends = np.nonzero((person >= 0) & ~same_next)[0]
    key = doc[ends].astype(np.int64) * (int(person.max(initial=0)) + 1) + person[ends]
    _, first = np.unique(key, return_index=True)
    return np.sort(ends[first])


def task_examples(task: Task, labels: dict[str, np.ndarray], doc: np.ndarray,
                  words: np.ndarray, world: World | None) -> Examples:
    """The rows, labels and groups of `task` among rows with these labels.

    Args:
        labels: per-row corpus labels (`pos`, `person`, ...; -1 = none).
        doc: per-row document index.
        words: per-row word type id (the group of word tasks).
        world: the corpus' world (fact tasks look up attributes).

    Raises:
        ValueError: the labels lack what the task reads (a corpus without labels).
    """
    if task.label not in labels:
        have = sorted(labels) or "none (a real-text corpus)"
        raise ValueError(
            f"task {task.name!r} reads the {task.label!r} label, which these rows lack (they "
            f"have {have}); probe with a world corpus (`workbench world build`, or `workbench "
            "world retokenize` for a model with another tokenizer)")
    lab = np.asarray(labels[task.label]).astype(np.int64)
    if task.kind != "facts":
        rows = np.nonzero(lab >= 0)[0]
        y = lab[rows]
        if task.name == "depth":
            y = np.minimum(y, MAX_DEPTH)
        return Examples(rows, y, np.asarray(words)[rows].astype(np.int64), list(task.classes))
    if world is None:
        raise ValueError(f"fact task {task.name!r} needs the corpus' world (world.json)")
    assert task.relation is not None
    rows = first_mentions(lab, doc)
    people = lab[rows]
    classes = world.objects(task.relation)
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[world.attribute(int(p), task.relation)] for p in people],
                 dtype=np.int64)
    return Examples(rows, y, people, classes)
