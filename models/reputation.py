"""A sender's reputation: one number that moves with what the platform tells about it.

Like Rspamd's reputation multipliers and Haraka's karma, each signal scales the score (0 < score
<= 1; 1 is a clean sender): a junk report or a "not delivered" result down, a delivery or a new
conversation up, bounded. With event time the deficit decays (it halves every
`reputation_half_life_s`), so a sender recovers when the bad signals stop. The score is part of
the sender's head row (models/burst.py) and a pure function of its app's log, so replay gives the
same score. It scales the burst step: the free allowance by the score, the pacing interval by its
inverse, in steps of 0.05 (`effect`), so a sender at 0.5 gets the limits a junk-reported sender
had before the score existed (5 instead of 10, intervals x 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .policy import Policy

# the signals, in the order of their counts in the row
SIGNALS = ("junk_report", "not_delivered", "failed", "paced_blast", "delivered", "conversation")
LABELS = {
    "junk_report": "junk report(s)",
    "not_delivered": "not-delivered result(s)",
    "failed": "failed deliveries",
    "paced_blast": "paced blast(s)",
    "delivered": "deliveries",
    "conversation": "new conversation(s)",
}
STEP = 20  # the score takes effect in steps of 1/20
FLOOR = 0.05


def factor(signal: str, policy: Policy) -> float:
    return getattr(policy, f"reputation_{signal}")


@dataclass(slots=True)
class Reputation:
    score: float = 1.0
    at: int = 0  # event time the score was last computed at
    # counts of each signal since the sender was last clean (score 1): the reasons it shows
    counts: list[int] = field(default_factory=lambda: [0] * len(SIGNALS))

    def now(self, ts: int, policy: Policy) -> float:
        """The score at `ts`: the deficit decays with event time since the last signal."""
        if self.score >= 1.0 or ts <= self.at:
            return self.score
        halves = (ts - self.at) / (policy.reputation_half_life_s * 1000)
        return 1.0 - (1.0 - self.score) * 0.5**halves

    def record(self, signal: str, ts: int, policy: Policy, weight: float = 1.0) -> None:
        """One signal at `ts`; `weight` scales its effect (the factor is raised to it)."""
        score = self.now(ts, policy)
        if round(score * STEP) == STEP:
            self.counts = [0] * len(SIGNALS)  # clean again: old reasons no longer apply
        # rounded as stored: a state kept decoded and one read back decide alike
        self.score = round(min(1.0, max(FLOOR, score * factor(signal, policy) ** weight)), 6)
        self.at = max(self.at, ts)
        self.counts[SIGNALS.index(signal)] += 1

    def effect(self, ts: int, policy: Policy) -> float:
        """The score as the limits use it: in steps of 0.05, at most 1."""
        return max(FLOOR, round(self.now(ts, policy) * STEP) / STEP)

    def reasons(self) -> str:
        return ", ".join(f"{n} {LABELS[s]}" for s, n in zip(SIGNALS, self.counts) if n) or "no signal"

    def to_list(self) -> list:
        return [self.score, self.at, self.counts]

    @classmethod
    def from_list(cls, fields: list | None) -> "Reputation":
        return cls() if not fields else cls(fields[0], fields[1], list(fields[2]))
