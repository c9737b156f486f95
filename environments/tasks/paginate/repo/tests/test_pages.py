import pytest

from paginate import PageError, Paginator


def test_exact_multiple():
    p = Paginator(list(range(6)), per_page=3)
    assert p.num_pages == 2
    assert p.page(2).items == [3, 4, 5]


def test_first_page_links():
    page = Paginator(list(range(6)), per_page=3).page(1)
    assert page.has_next and not page.has_previous


def test_out_of_range_page():
    with pytest.raises(PageError):
        Paginator(list(range(6)), per_page=3).page(3)
    with pytest.raises(PageError):
        Paginator(list(range(6)), per_page=3).page(0)


def test_empty_sequence_has_no_pages():
    assert Paginator([], per_page=5).num_pages == 0


def test_per_page_must_be_positive():
    with pytest.raises(ValueError):
        Paginator([1], per_page=0)


def test_iteration_covers_exact_multiple():
    assert [page.items for page in Paginator("abcd", per_page=2)] == [["a", "b"], ["c", "d"]]
