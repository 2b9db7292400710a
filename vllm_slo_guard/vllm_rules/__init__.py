"""vLLM's rules, in one place: what ``vllm serve`` accepts, how it resolves a config, what it allocates.

The argument table and parser (``args``), defaults and simple rules (``limits``), config resolution
(``config``), the startup memory plan (``memory``), startup failures with vLLM's messages
(``failures``), GPU and model catalogs (``catalog``, ``arch``, ``modelinfo``) and the one startup
check over all of them (``startup.check_startup``). The tuner's guard, space and repair and the
simulator both read these; this package imports neither of them.
"""
