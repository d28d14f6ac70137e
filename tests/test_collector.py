"""A serving hub process leaves its start-up heap out of the collector's full passes, and gives it back."""

import gc

from core.collector import GC_THRESHOLDS, collector_for_serving


def test_serving_freezes_the_start_up_heap_and_unfreezes_it_on_the_way_out():
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        assert gc.get_freeze_count() == 0
        with collector_for_serving():
            assert gc.get_threshold() == GC_THRESHOLDS
            frozen = gc.get_freeze_count()
            assert frozen > 10_000, "Django and the hub's modules are out of the collector's passes"
            made_later = [[] for _ in range(1_000)]
            assert gc.get_freeze_count() == frozen, "what is made while serving is collected as usual"
            del made_later
        assert gc.get_freeze_count() == 0, "given back: a later collection can free it"
    finally:
        gc.set_threshold(*before)
