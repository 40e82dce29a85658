"""Candidate generation: ALS (implicit or MLlib), the user's history, item co-occurrence and popular items,
fused into at most ``CandidateConfig.max_per_user`` candidates per user and fold (the ``als`` step)."""

from components.candidates.als import ImplicitAls, MllibAls, choose_backend
from components.candidates.base import CandidateGenerator, FoldTables
from components.candidates.cooc import CoocGenerator
from components.candidates.history import HistoryGenerator
from components.candidates.popular import PopularGenerator
from components.candidates.union import Fusion, union_candidates

__all__ = ["CandidateGenerator", "CoocGenerator", "FoldTables", "Fusion", "HistoryGenerator", "ImplicitAls",
           "MllibAls", "PopularGenerator", "choose_backend", "union_candidates"]
