"""Which training documents taught a belief: data attribution, checked against the world.

The world records which training documents state each fact (`{split}.doc_facts.npz`), so an
attribution method's ranking of documents can be scored against the truth rather than only
against another method. What lives where:

- `documents.py`: `Queries` (a fact's held-out prompts and its object) and `Documents` (the
  candidate training documents: their text and which of them state each queried fact);
- `truth.py`: retrieval scores of a ranking against the documents that state a fact
  (precision@k, average precision, and what a random ranking scores);
- `bm25.py`: BM25 over the documents' words (`bm25s`), the baseline every method stands
  beside (FTRACE, TrackStar: lexical retrieval is hard to beat on fact attribution);
- `gradients.py`: gradient similarity (`grad-dot`, `grad-cos`) of a query and each document,
  sketched to a few thousand numbers;
- `repsim.py`: representation similarity (residual stream cosine), forward passes only;
- `tracin.py`: TracIn over a run's checkpoints, weighted by the learning rates each
  checkpoint's stretch of training applied, and what each stretch contributed;
- `ekfac.py`: influence functions with EK-FAC curvature, computed by `kronfluence` (the glue:
  task, datasets, tracked modules, factors keyed by the weights they were fitted for);
- `methods.py`: every method behind one call, score matrices cached per model;
- `attribute.py`: the analysis (`workbench attribute`): the report of every method against
  the truth (`figures.py`, `summary.py`; flags in `cli.py`);
- `verify.py`: the check by retraining without each method's blamed documents (`workbench
  attribute verify`, a sweep on the sweep engine), and `lds.py`: the linear datamodeling
  score over retrainings on random subsets (`workbench attribute lds`).

The package sits above the sweep engine in the layers: its checks retrain models on it.
"""
