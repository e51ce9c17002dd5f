"""The router's approximate radix tree: insert, longest-prefix match per worker, LRU eviction."""

import random

from sgl.runtime.router.prefix_tree import PrefixTree

A, B = "http://a", "http://b"


def test_insert_and_match_per_tenant():
    tree = PrefixTree()
    tree.insert("hello world", A)
    tree.insert("hello there", B)
    tree.check_integrity()
    assert tree.match("hello world!") == (11, {A})
    assert tree.match("hello t") == (7, {B})
    assert tree.match("hello") == (5, {A, B})
    assert tree.match("xyz") == (0, set())
    assert tree.tenant_match("hello world", B) == 6
    assert tree.match("hello world", candidates=[B]) == (6, {B})
    assert tree.sizes == {A: 11, B: 11}


def test_reinsert_does_not_grow():
    tree = PrefixTree()
    tree.insert("abcdef", A)
    tree.insert("abc", A)
    tree.insert("abcdef", A)
    tree.check_integrity()
    assert tree.sizes[A] == 6


def test_remove_tenant():
    tree = PrefixTree()
    tree.insert("shared prefix one", A)
    tree.insert("shared prefix two", B)
    tree.remove_tenant(A)
    tree.check_integrity()
    assert A not in tree.sizes
    assert tree.match("shared prefix one") == (len("shared prefix "), {B})


def test_eviction_drops_least_recently_used_first():
    tree = PrefixTree()
    tree.insert("old-text-aaaa", A)
    tree.insert("new-text-bbbb", A)
    tree.insert("kept-by-b", B)
    freed = tree.evict(max_size=13)
    tree.check_integrity()
    assert freed == 13 and tree.sizes[A] == 13
    assert tree.tenant_match("new-text-bbbb", A) == 13
    assert tree.tenant_match("old-text-aaaa", A) == 0
    assert tree.sizes[B] == 9  # under the bound: untouched


def test_eviction_trims_a_shared_prefix_from_the_leaves():
    tree = PrefixTree()
    tree.insert("prefix-1", A)
    tree.insert("prefix-2", A)
    tree.insert("prefix-3", A)
    tree.evict(max_size=8)
    tree.check_integrity()
    assert tree.sizes[A] <= 8
    assert tree.tenant_match("prefix-3", A) == 8  # the newest survives whole


def test_random_operations_keep_integrity():
    rng = random.Random(0)
    tree = PrefixTree()
    tenants = [A, B, "http://c"]
    for step in range(400):
        text = "".join(rng.choice("ab") for _ in range(rng.randint(0, 12)))
        tenant = rng.choice(tenants)
        tree.insert(text, tenant)
        assert tree.tenant_match(text, tenant) == len(text)
        if step % 37 == 0:
            tree.evict(max_size=20)
            assert all(size <= 20 for size in tree.sizes.values())
        if step % 101 == 0:
            tree.remove_tenant(rng.choice(tenants))
        tree.check_integrity()
