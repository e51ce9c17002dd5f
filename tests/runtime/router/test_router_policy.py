"""Routing decisions without HTTP: cache hits, smallest-tree fallback, shortest queue when unbalanced."""

import pytest

from sgl.runtime.router.policy import PolicyConfig, is_unbalanced, make_policy

W = ["http://w0", "http://w1", "http://w2"]
IDLE = {url: 0 for url in W}
PREFIX = "You are a helpful assistant. " * 4


def test_cache_hit_routes_to_the_worker_with_the_prefix():
    policy = make_policy("cache_aware", PolicyConfig())
    first = policy.select(PREFIX + "question 1", W, IDLE)
    assert first.reason == "smallest_tree"
    second = policy.select(PREFIX + "question 2", W, IDLE)
    assert second.url == first.url and second.reason == "cache_hit"
    assert second.matched_chars == len(PREFIX + "question ")


def test_new_prefixes_spread_over_the_smallest_trees():
    policy = make_policy("cache_aware", PolicyConfig())
    urls = [policy.select(f"group {g} " + "x" * 50, W, IDLE).url for g in range(3)]
    assert sorted(urls) == W


def test_low_match_ratio_is_not_a_hit():
    policy = make_policy("cache_aware", PolicyConfig(cache_threshold=0.9))
    first = policy.select("abcdefghij", W, IDLE)
    other = policy.select("abcdeZZZZZ", W, IDLE)  # 50% match < 0.9
    assert other.reason == "smallest_tree" and other.url != first.url


def test_unbalanced_load_uses_shortest_queue():
    policy = make_policy("cache_aware", PolicyConfig(balance_abs_threshold=4, balance_rel_threshold=1.5))
    hit = policy.select(PREFIX + "q", W, IDLE).url
    loads = {url: 2 for url in W}
    loads[hit] = 10
    decision = policy.select(PREFIX + "q2", W, loads)
    assert decision.reason == "shortest_queue" and decision.url != hit
    loads = {url: 5 for url in W}  # max - min = 2, not above the absolute threshold: balanced
    loads[hit], loads[decision.url] = 6, 7
    again = policy.select(PREFIX + "q3", W, loads)
    assert again.reason == "cache_hit" and again.url == hit  # both hold the prefix: the less loaded


def test_is_unbalanced_needs_both_thresholds():
    assert is_unbalanced(["a", "b"], {"a": 40, "b": 0}, 32, 1.0001)
    assert not is_unbalanced(["a", "b"], {"a": 30, "b": 0}, 32, 1.0001)
    assert not is_unbalanced(["a", "b"], {"a": 100, "b": 60}, 32, 2.0)


def test_dead_worker_is_never_chosen_and_removal_forgets_it():
    policy = make_policy("cache_aware", PolicyConfig())
    hit = policy.select(PREFIX, W, IDLE).url
    rest = [u for u in W if u != hit]
    assert policy.select(PREFIX, rest, IDLE).url in rest
    policy.remove_worker(hit)
    assert hit not in policy.tree.sizes


def test_eviction_bounds_the_tree():
    policy = make_policy("cache_aware", PolicyConfig(max_tree_size=100))
    for i in range(50):
        policy.select(f"prompt number {i} " + "y" * 30, W, IDLE)
    policy.evict()
    assert all(size <= 100 for size in policy.tree.sizes.values())


def test_round_robin_random_shortest_queue():
    rr = make_policy("round_robin", PolicyConfig())
    assert [rr.select("x", W, IDLE).url for _ in range(4)] == [*W, W[0]]
    assert make_policy("random", PolicyConfig()).select("x", W, IDLE).url in W
    sq = make_policy("shortest_queue", PolicyConfig())
    assert sq.select("x", W, {"http://w0": 3, "http://w1": 1, "http://w2": 2}).url == "http://w1"


def test_unknown_policy():
    with pytest.raises(ValueError, match="policy must be one of"):
        make_policy("nope", PolicyConfig())


def test_routing_text():
    from sgl.runtime.router.request_text import routing_text

    assert routing_text({"text": "abc"}) == "abc"
    assert routing_text({"text": ["first", "second"]}) == "first"  # a batch routes by its first prompt
    assert routing_text({"prompt": [1, 2, 3]}) == "1 2 3"
    assert routing_text({"input_ids": [[5, 6], [7]]}) == "5 6"
    assert routing_text({"input": "embed me"}) == "embed me"
    chat = routing_text({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "q"}]})
    assert chat.startswith('[{"content": "S"')
    assert routing_text([1, 2]) == "" and routing_text({}) == ""


def test_help_names_every_flag_with_its_default():
    import dataclasses

    from sgl.runtime.router.launch import build_parser
    from sgl.runtime.router.router_args import RouterArgs

    text = " ".join(build_parser().format_help().split())
    for f in dataclasses.fields(RouterArgs):
        assert "--" + f.name.replace("_", "-") in text
    assert text.count("(default:") == len(dataclasses.fields(RouterArgs))
    with pytest.raises(ValueError, match="cache_threshold"):
        RouterArgs(cache_threshold=2.0)
