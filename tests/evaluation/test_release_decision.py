"""What a person's choice on a release means: promoted or not, break-glass or not, and how it is worded."""

from __future__ import annotations

from hitl.evaluation.decision import GATE_CHOICES, OVERRIDE, decide


def test_approve_after_a_pass_promotes_without_break_glass():
    d = decide("approve", "PASS", "ann", "looks good")
    assert (d.promoted, d.break_glass, d.text) == (True, False, "approved by ann: looks good")


def test_reject_never_promotes():
    for outcome in GATE_CHOICES:
        d = decide("reject", outcome, "bo", "not now")
        assert (d.promoted, d.break_glass) == (False, False)
        assert d.text == "rejected by bo: not now"


def test_promoting_against_a_gate_that_did_not_pass_is_break_glass():
    d = decide(OVERRIDE, "FAIL", "cy", "a written reason for the override")
    assert d.promoted and d.break_glass
    assert d.text == "approved (break-glass, gate FAIL) by cy: a written reason for the override"
    d = decide("approve", "INCONCLUSIVE", "cy", "judgement call with a reason")
    assert d.promoted and d.break_glass and d.text.startswith("approved (break-glass, gate INCONCLUSIVE)")


def test_a_fail_offers_no_plain_approval():
    assert "approve" not in GATE_CHOICES["FAIL"] and OVERRIDE in GATE_CHOICES["FAIL"]
