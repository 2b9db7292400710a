"""vLLM V1's scheduler and paged KV-cache manager, re-implemented for the simulator.

Semantics follow vLLM's ``vllm/v1/core/sched/scheduler.py`` (``schedule``, ``_preempt_request``),
``vllm/v1/core/kv_cache_manager.py`` (``allocate_slots``) and ``vllm/v1/core/block_pool.py`` (the null block,
the LRU free-block queue of ``vllm/v1/core/kv_cache_utils.py``):

- one token budget per step (``max_num_batched_tokens``); running requests first (a decode needs one
  token, a partial prefill continues), then waiting requests FCFS while fewer than ``max_num_seqs``
  run; waiting requests are not admitted in a step that preempted;
- chunked prefill: a prompt is split to fit the budget; without it a prompt must fit whole;
- paged KV blocks of ``block_size`` tokens with no watermark; one block is the null block;
- prefix caching: full prompt blocks are hashed (chained); a new request reuses the longest cached
  prefix (at most ``num_tokens − 1`` tokens); freed cached blocks stay reusable until evicted in LRU
  order; never-used blocks are handed out first, as they head vLLM's free queue;
- when blocks run out, the most recently admitted running request is preempted by recompute: its
  blocks are freed, its progress reset, and it goes to the front of the waiting queue.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from ..vllm_rules.config import EngineConfig


@dataclass(eq=False)
class SimRequest:
    """One request inside the simulated engine (mutable state machine)."""

    req_id: int
    prompt_len: int
    max_tokens: int
    prompt_ids: tuple[int, ...] | None = None  # only needed for prefix-cache hashing
    arrival_s: float = 0.0
    num_computed: int = 0
    num_output: int = 0
    blocks: list[int] = field(default_factory=list)
    block_hashes: list[int] | None = None
    first_token_s: float | None = None
    last_token_s: float | None = None
    finish_s: float | None = None
    num_preemptions: int = 0
    num_cached_tokens: int = 0
    finished: bool = False
    finish_reason: str = "length"

    @property
    def num_tokens(self) -> int:
        return self.prompt_len + self.num_output

    @property
    def is_decoding(self) -> bool:
        return self.num_tokens - self.num_computed == 1 and self.num_computed >= self.prompt_len


def _chain_hashes(ids: tuple[int, ...], block_size: int) -> list[int]:
    hashes: list[int] = []
    parent = 0
    for start in range(0, len(ids) - block_size + 1, block_size):
        parent = hash((parent, ids[start : start + block_size]))
        hashes.append(parent)
    return hashes


class BlockPool:
    """Free-block accounting with an LRU free queue and a prefix-cache map (hash → block)."""

    def __init__(self, num_blocks: int, caching: bool) -> None:
        self.capacity = max(num_blocks - 1, 0)  # block 0 is vLLM's null block
        self.caching = caching
        self._fresh = self.capacity  # never-used blocks head the free queue
        self._next_id = 1
        self._free: OrderedDict[int, None] = OrderedDict()
        self._ref: dict[int, int] = {}
        self._hash_of: dict[int, int] = {}
        self._cached: dict[int, int] = {}

    @property
    def num_free(self) -> int:
        return self._fresh + len(self._free)

    @property
    def usage(self) -> float:
        return 1.0 - self.num_free / self.capacity if self.capacity else 0.0

    def _pop_free(self) -> int:
        if self._fresh:
            self._fresh -= 1
            block = self._next_id
            self._next_id += 1
            return block
        block, _ = self._free.popitem(last=False)
        old = self._hash_of.pop(block, None)
        if old is not None and self._cached.get(old) == block:
            del self._cached[old]
        return block

    def allocate(self, count: int) -> list[int]:
        blocks = [self._pop_free() for _ in range(count)]
        for block in blocks:
            self._ref[block] = 1
        return blocks

    def cached_prefix(self, hashes: list[int], limit_blocks: int) -> list[int]:
        """Blocks of the longest cached prefix (without touching them)."""
        hits: list[int] = []
        for h in hashes[:limit_blocks]:
            block = self._cached.get(h)
            if block is None:
                break
            hits.append(block)
        return hits

    def touch(self, blocks: list[int]) -> None:
        for block in blocks:
            ref = self._ref.get(block, 0)
            if ref == 0:
                self._free.pop(block, None)
            self._ref[block] = ref + 1

    def cache(self, blocks: list[int], hashes: list[int], upto: int) -> None:
        for i in range(upto):
            block, h = blocks[i], hashes[i]
            if block not in self._hash_of:
                self._hash_of[block] = h
                self._cached.setdefault(h, block)

    def free(self, blocks: list[int]) -> None:
        for block in reversed(blocks):  # tail blocks are evicted first, as in vLLM
            ref = self._ref[block] - 1
            self._ref[block] = ref
            if ref == 0:
                if not self.caching:
                    self._hash_of.pop(block, None)
                self._free[block] = None


@dataclass
class ScheduledStep:
    """The work of one step: (request, new tokens) pairs and what was preempted."""

    items: list[tuple[SimRequest, int]]
    preempted: list[SimRequest]


class Scheduler:
    """Continuous batching with a token budget, FCFS, recompute preemption."""

    def __init__(self, cfg: EngineConfig, num_blocks: int, max_model_len: int) -> None:
        self.cfg = cfg
        self.block_size = cfg.block_size
        self.max_model_len = max_model_len
        self.pool = BlockPool(num_blocks, cfg.enable_prefix_caching)
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self.num_preemptions = 0
        self.prefix_queries = 0
        self.prefix_hits = 0
        threshold = cfg.long_prefill_token_threshold
        self.long_prefill_threshold = threshold if threshold > 0 else 0

    def add(self, req: SimRequest) -> None:
        if self.cfg.enable_prefix_caching and req.prompt_ids is not None and req.block_hashes is None:
            req.block_hashes = _chain_hashes(req.prompt_ids, self.block_size)
        self.waiting.append(req)

    @property
    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    def _blocks_needed(self, req: SimRequest, tokens: int) -> int:
        return max(-(-tokens // self.block_size) - len(req.blocks), 0)

    def _allocate(self, req: SimRequest, num_new: int) -> bool:
        needed = self._blocks_needed(req, req.num_computed + num_new)
        if needed > self.pool.num_free:
            return False
        if needed:
            req.blocks.extend(self.pool.allocate(needed))
        if req.block_hashes:
            full = min((req.num_computed + num_new) // self.block_size, len(req.block_hashes))
            self.pool.cache(req.blocks, req.block_hashes, full)
        return True

    def _preempt(self, req: SimRequest) -> None:
        self.pool.free(req.blocks)
        req.blocks = []
        req.num_computed = 0
        req.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(req)

    def schedule(self) -> ScheduledStep:
        budget = self.cfg.max_num_batched_tokens
        items: list[tuple[SimRequest, int]] = []
        preempted: list[SimRequest] = []
        threshold = self.long_prefill_threshold
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            num_new = req.num_tokens - req.num_computed
            if threshold and num_new > threshold:
                num_new = threshold
            num_new = min(num_new, budget, self.max_model_len - 1 - req.num_computed)
            if num_new <= 0:
                i += 1
                continue
            scheduled = True
            while not self._allocate(req, num_new):
                victim = self.running.pop()
                self._preempt(victim)
                preempted.append(victim)
                if victim is req:
                    scheduled = False
                    break
            if not scheduled:
                break
            items.append((req, num_new))
            budget -= num_new
            i += 1
        if not preempted:
            self._admit_waiting(items, budget, threshold)
        return ScheduledStep(items, preempted)

    def _admit_waiting(self, items: list[tuple[SimRequest, int]], budget: int, threshold: int) -> None:
        cfg = self.cfg
        while self.waiting and budget > 0 and len(self.running) < cfg.max_num_seqs:
            req = self.waiting[0]
            hits: list[int] = []
            if req.num_computed == 0 and req.block_hashes:
                limit = (req.num_tokens - 1) // self.block_size
                hits = self.pool.cached_prefix(req.block_hashes, limit)
                self.prefix_queries += req.num_tokens
                self.prefix_hits += len(hits) * self.block_size
            cached_tokens = len(hits) * self.block_size
            num_new = req.num_tokens - req.num_computed - cached_tokens
            if threshold and num_new > threshold:
                num_new = threshold
            if not cfg.enable_chunked_prefill and num_new > budget:
                break
            num_new = min(num_new, budget)
            evictable_hits = sum(1 for b in hits if self.pool._ref.get(b, 0) == 0)
            needed = self._blocks_needed(req, req.num_computed + cached_tokens + num_new) - len(hits)
            if needed + evictable_hits > self.pool.num_free:
                break
            self.waiting.popleft()
            if hits:
                self.pool.touch(hits)
                req.blocks = list(hits)
                req.num_computed = cached_tokens
                req.num_cached_tokens = cached_tokens
            self._allocate(req, num_new)
            self.running.append(req)
            items.append((req, num_new))
            budget -= num_new

    def finish(self, req: SimRequest) -> None:
        req.finished = True
        self.running.remove(req)
        self.pool.free(req.blocks)
        req.blocks = []

    def abort(self, req: SimRequest) -> None:
        """Drop a request the client gave up on, running or waiting, and free its blocks (vLLM's abort)."""
        if req.finished:
            return
        req.finished = True
        req.finish_reason = "abort"
        if req in self.running:
            self.running.remove(req)
        elif req in self.waiting:
            self.waiting.remove(req)
        self.pool.free(req.blocks)
        req.blocks = []
