"""The `hitl.dataset` tag: written as a dataset version's ref, read back as its number (one module owns both)."""

from __future__ import annotations

from hitl.datasets import versions


def test_the_tag_round_trips_a_ref():
    dv = versions.DatasetVersion("demo-dataset", 7, "run", "sha", 10, 6)
    assert versions.ref_version(dv.ref) == 7
    assert versions.DATASET_TAG == "hitl.dataset"


def test_a_ref_without_a_version_has_none():
    assert versions.ref_version("") is None
    assert versions.ref_version("demo-dataset") is None
    assert versions.ref_version("name@with@at@3") == 3
