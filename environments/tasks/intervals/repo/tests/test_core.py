import pytest

from intervals import Interval, merge, overlaps, total_length


def test_merge_overlapping():
    assert merge([Interval(1, 3), Interval(2, 6), Interval(8, 10)]) == [Interval(1, 6), Interval(8, 10)]


def test_merge_unsorted_input():
    assert merge([Interval(8, 10), Interval(1, 3), Interval(2, 4)]) == [Interval(1, 4), Interval(8, 10)]


def test_merge_disjoint_kept():
    assert merge([Interval(1, 2), Interval(4, 5)]) == [Interval(1, 2), Interval(4, 5)]


def test_merge_accepts_tuples():
    assert merge([(5, 7), (1, 2)]) == [Interval(1, 2), Interval(5, 7)]


def test_merge_rejects_reversed_interval():
    with pytest.raises(ValueError, match="after its end"):
        merge([Interval(3, 1)])


def test_overlaps_shared_end_point():
    assert overlaps(Interval(1, 3), Interval(3, 5))
    assert not overlaps(Interval(1, 2), Interval(3, 5))


def test_total_length_counts_overlap_once():
    assert total_length([Interval(0, 4), Interval(2, 6)]) == 6
