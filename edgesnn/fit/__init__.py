"""``edgesnn fit CHECKPOINT --board B``: the most accurate deployment of a trained checkpoint that fits
a board's budgets, found by a multi-objective search (accuracy vs energy vs memory) over
compression methods and their settings (weight bits per group of inner layers), the stream dtype, D, the
target and event-driven layers.

Each trial is a recipe run (edgesnn.run): a short compression fine-tune, the export (verified against
the IR) and the profile on the board. The search is an Optuna study stored in the fit folder
(:mod:`.search`); the front, the chosen recipe and the report: :mod:`.results`.
"""

from edgesnn.fit.front import Budgets
from edgesnn.fit.search import fit

__all__ = ["Budgets", "fit"]
