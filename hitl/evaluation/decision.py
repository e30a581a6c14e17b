"""A person's decision on a release: which choices each gate outcome offers, and what a choice means (promote
or not, and whether it overrides a gate that did not PASS)."""

from __future__ import annotations

from dataclasses import dataclass

OVERRIDE = "override"  # break-glass: promote against a gate that did not PASS
GATE_CHOICES = {"PASS": ("approve", "reject"), "INCONCLUSIVE": ("approve", "reject"), "FAIL": ("reject", OVERRIDE)}
PAST = {"approve": "approved", "reject": "rejected", OVERRIDE: "overridden"}
MIN_OVERRIDE_REASON = 20  # characters: a gate that did not PASS is only overridden with a reason to read later


@dataclass(frozen=True)
class Decision:
    promoted: bool  # @champion moves to the challenger
    break_glass: bool  # promoted although the gate did not PASS
    text: str  # as the report and the audit chain say it


def decide(choice: str, outcome: str, approver: str, reason: str) -> Decision:
    """The meaning of `choice` ("approve", "reject" or OVERRIDE) on a release whose gate said `outcome`."""
    promoted = choice in ("approve", OVERRIDE)
    break_glass = promoted and outcome != "PASS"
    done = f"approved (break-glass, gate {outcome})" if break_glass else PAST[choice]
    text = f"{done} by {approver}: {reason}"
    return Decision(promoted, break_glass, text)
