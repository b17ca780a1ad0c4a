"""The synthetic world: people and facts, a labelled English grammar, repeated spans, and the
corpus files a model trains on (see `corpus.py` for the directory layout).

>>> from workbench.world import WorldConfig, build_world
>>> build_world(WorldConfig(seed=0, n_people=3)).people[0].name
'bruno moreau'
"""

from workbench.world.corpus import build_corpus
from workbench.world.facts import World, WorldConfig, build_world
from workbench.world.loader import Corpus, load_corpus
from workbench.world.text import build_text_corpus

__all__ = [
    "Corpus",
    "World",
    "WorldConfig",
    "build_corpus",
    "build_text_corpus",
    "build_world",
    "load_corpus",
]
