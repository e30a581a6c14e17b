"""The words the stages share: selection reasons, split names, the quarantine column, the text limit.

Plain constants, without pandas or pandera, so a module that only needs a word (the review forms, the inbox, a
dispatch run) does not pay for the data contracts' imports (hitl/schemas.py builds on these).
"""

from __future__ import annotations

MAX_TEXT_CHARS = 10_000
RANDOM = "random"  # the representative random draw: the regression set and the release verdict
SELECTION_REASONS = (RANDOM, "uncertain", "novel", "disagreement", "flagged", "consensus")
SPLITS = ("train", "hard_case", "regression")
REASON_COLUMN = "_quarantine_reason"
CAUTION = "> **Caution:** "  # a caution line on the release report's first screen (read back by the inbox)
