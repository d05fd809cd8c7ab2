"""Concept alignment of UCE positions (erase/token_align.py): which target positions keep their
K/V and which anchor position each rewritten one takes."""

from __future__ import annotations

from cu_cli.erase.token_align import align, common_prefix, eos_index

BOS, EOS = 0, 1


def row(*ids, L=10):
    return [BOS, *ids, EOS] + [EOS] * (L - len(ids) - 2)


def test_style_keeps_the_words_before_the_concept_and_aligns_at_eos():
    # "a house in ocean stripes style" (5 6 7 8 9 10) vs anchor "a house" (5 6)
    t, a = row(5, 6, 7, 8, 9, 10), row(5, 6)
    al = align(t, a, concept=[8, 9], eos_id=EOS)
    assert al.concept_found
    assert al.keep == [0, 1, 2, 3, 4]  # BOS a house in ocean: "ocean" is shared by every ocean style
    assert al.edit[0] == (5, 3)  # "stripes" -> the anchor's EOS (clamped to the common prefix)
    assert dict(al.edit)[7] == 3  # target EOS -> anchor EOS
    assert dict(al.edit)[8] == 4 and dict(al.edit)[9] == 5  # padding aligned after EOS
    assert [j for j, _ in al.edit] == list(range(5, 10))


def test_object_pairs_positions_from_the_concept_on():
    # "a arrow in neon stripes style" vs "a tree in neon stripes style": same length
    t, a = row(5, 20, 7, 8, 9, 10), row(5, 21, 7, 8, 9, 10)
    al = align(t, a, concept=[20], eos_id=EOS)
    assert al.keep == [0, 1]
    assert al.edit == [(j, j) for j in range(2, 10)]


def test_missing_concept_falls_back_to_the_first_difference_and_says_so():
    t, a = row(5, 6, 7), row(5, 9, 7)
    al = align(t, a, concept=[42], eos_id=EOS)
    assert not al.concept_found
    assert al.keep == [0, 1] and al.edit[0] == (2, 2)


def test_position_mode_is_uce_pairing():
    t, a = row(5, 6, 7), row(5)
    al = align(t, a, concept=[6], eos_id=EOS, mode="position")
    assert al.keep == [] and al.edit == [(j, j) for j in range(10)]


def test_helpers():
    assert eos_index(row(5, 6), EOS) == 3
    assert eos_index([BOS, 5, 6], EOS) == 2  # truncated: the last position
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
