"""Cross-probe packing: every static text item of an audit goes through one batch scheduler.

Items of all static text probes (every probe, variant and data set; not attacks, not images) are
sorted by prompt length and cut into full batches across probe boundaries, so no probe leaves a
half-empty batch and similar lengths share one (less padding). Each batch's answers are routed
back to their probe, judged by that probe's judges, and stored under the same sample key as
before (audit, probe, item, variant): an interrupted audit resumes where it stopped, and the
per-probe loop in auditd.runner.audit then finds every item stored and only closes the probes.

A streaming backend (backend:hf) runs all items as one continuous batch (auditd.backends.hf_stream):
answers are judged and stored a batch at a time as they finish, and early stop
(auditd.runner.early_stop) is asked along the way. A token-level backend that cannot stream falls
back to two stages: every eligible item first gets a short prefix; those decided by it are judged
and stored at once, the rest are continued from their exact prefix tokens (re-prefilled) in new
packed batches.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from auditd.backends.base import (
    Chat,
    Finished,
    GenerationParams,
    StreamingGeneration,
    StreamUnsupported,
    TokenGeneration,
)
from auditd.policy.model import Policy, ProbePlan
from auditd.probe import Probe, ProbeItem
from auditd.probe.build import build_probe
from auditd.runner.early_stop import decide_prefix, prefix_safe
from auditd.runner.errors import AuditFailed, Interrupted
from auditd.runner.items import select_items
from auditd.runner.timings import record_audit_timings
from auditd.stage import stage

log = logging.getLogger(__name__)

_SENTINEL = "\x00auditd-early-stop-probe\x00"


@dataclass
class Job:
    plan: ProbePlan
    probe: Probe
    item: ProbeItem
    judge_ids: list[str]
    chat: Chat
    early: bool = False  # eligible for early stop
    ids: list[int] = field(default_factory=list)  # prompt token ids (token backends)
    prefix: list[int] = field(default_factory=list)  # answer tokens of the first stage
    prefix_s: float = 0.0  # its share of the first stage's generate seconds


@dataclass
class Done:
    job: Job
    output: str
    new_tokens: int | None
    early_stop: bool | None  # None: not eligible; False: continued; True: stopped after the prefix
    gen_s: float


def chat_of(item: ProbeItem) -> Chat:
    return ([{"role": "system", "content": item.system}] if item.system else []) + [
        {"role": "user", "content": item.prompt}
    ]


def static_text(probe: Probe) -> bool:
    return probe.modality == "text" and not probe.attack


def collect(runner, policy: Policy, plan: list[ProbePlan]) -> tuple[list[Job], dict[str, list[int]]]:
    """The items still to generate for every static text probe (opening their probe runs), and
    per probe [items stored, items planned] for progress."""

    jobs: list[Job] = []
    counts: dict[str, list[int]] = {}
    for p in plan:
        probe = build_probe(p)
        if not static_text(probe):
            continue
        items = select_items(probe, p)
        opened = runner.open_probe_run(p.id, len(items))
        if opened.finished:
            continue
        done = opened.stored
        judge_ids = policy.judges_for(p, probe)
        todo = [it for it in items if (it.index, it.variant) not in done]
        counts[p.id] = [len(items) - len(todo), len(items)]
        runner.progress(p.id, *counts[p.id])
        jobs += [Job(p, probe, it, judge_ids, chat_of(it)) for it in todo]
    return jobs, counts


def early_eligible(job: Job, policy: Policy) -> bool:
    """Only where the judges read nothing but the raw answer's opening."""
    es = policy.generation.early_stop
    if not es.enabled or es.prefix_tokens >= policy.generation.max_new_tokens or not prefix_safe(job.judge_ids):
        return False
    return job.probe.judge_input(job.item, _SENTINEL).output == _SENTINEL  # a decoded variant reads more


class Packer:
    """Runs the jobs in packed batches and hands each finished batch to `finish`."""

    def __init__(
        self,
        runner,
        policy: Policy,
        backend: Any,
        judges: dict,
        batch_size: int,
        counts: dict[str, list[int]],
    ):
        self.runner, self.policy, self.backend, self.judges = (
            runner,
            policy,
            backend,
            judges,
        )
        self.size = batch_size
        self.counts = counts
        gen = policy.generation
        self.params = GenerationParams(
            max_new_tokens=gen.max_new_tokens,
            temperature=gen.temperature,
            seed=gen.seed,
            batch_size=batch_size,
        )
        self.window = getattr(judges.get("refusal"), "window", 240)

    # -- text backends: one stage, whole chats ----------------------------------------------------
    def run_text(self, jobs: list[Job]) -> None:
        jobs = sorted(jobs, key=lambda j: sum(len(m["content"]) for m in j.chat))
        for start in range(0, len(jobs), self.size):
            batch = jobs[start : start + self.size]
            self.runner.gate()
            t0 = time.monotonic()
            with stage("generate"):
                outputs = self.backend.generate([j.chat for j in batch], self.params)
            gen_s = time.monotonic() - t0
            self._check(outputs, batch)
            self.finish([Done(j, out, None, None, gen_s / len(batch)) for j, out in zip(batch, outputs)])

    # -- token backends ----------------------------------------------------------------------------
    def run_tokens(self, jobs: list[Job]) -> None:
        with stage("chat template rendering"):
            encoded = self.backend.encode_chats([j.chat for j in jobs])
        for j, ids in zip(jobs, encoded):
            j.ids, j.early = list(ids), early_eligible(j, self.policy)
        if isinstance(self.backend, StreamingGeneration):
            try:
                self.run_stream(jobs)
                return
            except StreamUnsupported as why:  # raised before any answer: nothing stored twice
                log.info("continuous batching unavailable (%s): two-stage generation", why)
        self.run_two_stage(jobs)

    def run_stream(self, jobs: list[Job]) -> None:
        """Continuous batching: answers are judged and stored a batch at a time as they finish;
        early stop is asked along the way and a decided answer leaves the batch at once."""
        greedy = self.params.temperature == 0
        # Greedy decoding gives one prompt one answer: each distinct prompt is generated once.
        groups: dict[object, list[Job]] = {}
        for k, j in enumerate(jobs):
            groups.setdefault(tuple(j.ids) if greedy else k, []).append(j)
        uniques = list(groups.values())
        eligible = [all(j.early for j in g) for g in uniques]

        def decide(index: int, tokens: list[int]) -> str | None:
            if not eligible[index]:
                return None
            return decide_prefix(self.backend.decode(tokens), tokens, greedy=greedy, window=self.window)

        self.runner.gate()
        stream = self.backend.generate_stream(
            [g[0].ids for g in uniques],
            self.params,
            decide=decide if any(eligible) else None,
            decide_from=self.policy.generation.early_stop.prefix_tokens,
            tick=self.runner.gate,
        )
        pending: list[Finished] = []
        gen_s = 0.0

        def store() -> None:
            nonlocal pending, gen_s
            share = gen_s / len(pending)
            done = []
            for r in pending:
                text, group = self.backend.decode(r.tokens), uniques[r.index]
                early = (r.decided is not None) if eligible[r.index] else None
                done += [Done(j, text, len(r.tokens), early, share / len(group)) for j in group]
            self.finish(done)
            pending, gen_s = [], 0.0

        while True:
            t0 = time.monotonic()
            try:
                with stage("generate"):
                    row = next(stream, None)
            except Interrupted:  # the daemon stops: keep the answers already finished
                if pending:
                    store()
                raise
            gen_s += time.monotonic() - t0
            if row is not None:
                pending.append(row)
            if pending and (row is None or len(pending) >= self.size):
                store()
                if row is not None:
                    self.runner.gate()  # as between batches: a stop or cancel is seen at once
            if row is None:
                return

    def run_two_stage(self, jobs: list[Job]) -> None:
        """Backends without streaming: every eligible item gets a prefix, those decided by it stop,
        the rest continue (re-prefilled) in new packed batches."""
        early = sorted((j for j in jobs if j.early), key=lambda j: len(j.ids))
        full = sorted((j for j in jobs if not j.early), key=lambda j: len(j.ids))
        prefix_n = self.policy.generation.early_stop.prefix_tokens
        pool: list[Job] = []  # continuing after their prefix
        for start in range(0, len(early), self.size):
            batch = early[start : start + self.size]
            rows, gen_s = self._generate([j.ids for j in batch], prefix_n)
            stopped = []
            for j, row in zip(batch, rows):
                j.prefix, j.prefix_s = row, gen_s / len(batch)
                text = self.backend.decode(row)
                finished = len(row) < prefix_n  # ended (eos) inside the prefix: nothing to continue
                if finished or decide_prefix(text, row, greedy=self.params.temperature == 0, window=self.window):
                    stopped.append(Done(j, text, len(row), not finished, gen_s / len(batch)))
                else:
                    pool.append(j)
            if stopped:
                self.finish(stopped)
            while len(pool) >= self.size:
                self._continue(pool[: self.size])
                del pool[: self.size]
        for start in range(0, len(pool), self.size):
            self._continue(pool[start : start + self.size])
        for start in range(0, len(full), self.size):
            batch = full[start : start + self.size]
            rows, gen_s = self._generate([j.ids for j in batch], self.params.max_new_tokens)
            self.finish(
                [Done(j, self.backend.decode(r), len(r), None, gen_s / len(batch)) for j, r in zip(batch, rows)]
            )

    def _continue(self, batch: list[Job]) -> None:
        batch = sorted(batch, key=lambda j: len(j.ids) + len(j.prefix))
        more = self.params.max_new_tokens - len(batch[0].prefix)
        rows, gen_s = self._generate([j.ids + j.prefix for j in batch], more)
        done = []
        for j, row in zip(batch, rows):
            answer = j.prefix + row
            done.append(
                Done(
                    j,
                    self.backend.decode(answer),
                    len(answer),
                    False,
                    j.prefix_s + gen_s / len(batch),  # both stages count as generate time
                )
            )
        self.finish(done)

    def _generate(self, ids: list[list[int]], new_tokens: int) -> tuple[list[list[int]], float]:
        self.runner.gate()
        params = GenerationParams(
            max_new_tokens=new_tokens,
            temperature=self.params.temperature,
            seed=self.params.seed,
            batch_size=len(ids),
        )
        t0 = time.monotonic()
        with stage("generate"):
            rows = self.backend.generate_tokens(ids, params)
        self._check(rows, ids)
        return rows, time.monotonic() - t0

    @staticmethod
    def _check(outputs: list, batch: list) -> None:

        if len(outputs) != len(batch):
            raise AuditFailed(f"backend returned {len(outputs)} outputs for {len(batch)} prompts")

    # -- routing back to the probes -------------------------------------------------------------------
    def finish(self, done: list[Done]) -> None:
        by_probe: dict[str, list[Done]] = {}
        for d in done:
            by_probe.setdefault(d.job.plan.id, []).append(d)
        for group in by_probe.values():
            self._judge_and_store(group)

    def _judge_and_store(self, group: list[Done]) -> None:
        """One probe's share of a batch: its judges, one transaction, its progress."""
        job = group[0].job
        items, outputs = [d.job.item for d in group], [d.output for d in group]
        inputs = [job.probe.judge_input(it, out) for it, out in zip(items, outputs)]
        t0 = time.monotonic()
        with stage("judge"):
            scores = {j: self.judges[j].score(inputs) for j in job.judge_ids}
        judge_s = time.monotonic() - t0
        extra = [{"early_stop": d.early_stop, "new_tokens": d.new_tokens} for d in group]
        gen_s = sum(d.gen_s for d in group)
        with stage("store"):
            self.runner.store_batch(
                self.policy,
                job.plan.id,
                job.probe.expect,
                job.judge_ids,
                items,
                outputs,
                scores,
                gen_s,
                judge_s,
                extra,
            )
        counts = self.counts[job.plan.id]
        counts[0] += len(group)
        self.runner.progress(job.plan.id, counts[0], counts[1])


def run_packed(runner, policy: Policy, plan: list[ProbePlan], backend: Any, judges: dict) -> None:
    """Generate, judge and store every static text item of the audit still missing."""
    from auditd.backends.batch_size import resolve

    if not policy.generation.packing:
        return
    jobs, counts = collect(runner, policy, plan)
    if not jobs:
        return
    started = time.monotonic()
    built_before = getattr(backend, "built", True)
    tokens = isinstance(backend, TokenGeneration)  # builds a lazy backend: there is work to do
    load_s = 0.0 if built_before else time.monotonic() - started
    sample = backend.encode_chats([j.chat for j in jobs[:64]]) if tokens else []
    cache = runner.ctx.settings.home / "batch_size.json"
    with stage("batch size"):
        size, how = resolve(
            policy.generation.batch_size,
            backend,
            sample,
            cache,
            policy.generation.max_new_tokens,
            upper=len(jobs),
        )
    record_audit_timings(runner, load_s=load_s, batch_size=size, batch_size_from=how)
    packer = Packer(runner, policy, backend, judges, size, counts)
    if tokens:
        packer.run_tokens(jobs)
    else:
        packer.run_text(jobs)
