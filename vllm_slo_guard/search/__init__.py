"""Searchers over vLLM engine arguments and the tuning loop that drives them."""
