"""Every threshold of the consent and burst rules, in one frozen settings object."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from typing import Any, Mapping

from .categories import CATEGORIES
from .events import MAX_VALID_FOR_S, NETWORK_RE
from .quiet_hours import QuietHours, QuietHoursError
from .wording import LOCALES


class PolicyError(ValueError):
    """A policy file or mapping that cannot be used; the message says which key and why."""


def load_toml(path: str, what: str, error: type[ValueError]) -> dict[str, Any]:
    """A TOML file's tables, or `error` naming `what` and the file (the policy, the keyring)."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise error(f"{what} {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} {path}: not valid TOML: {exc}") from None


@dataclass(frozen=True)
class Policy:
    # consent
    opt_out_keywords: tuple[str, ...] = ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE")
    opt_in_keywords: tuple[str, ...] = ("START", "UNSTOP", "YES")
    help_keywords: tuple[str, ...] = ("HELP", "INFO")
    consent_locales: tuple[str, ...] = ("en",)  # word lists of models/wording.py: en, es, fr
    opt_out_confirmation_s: int = 5 * 60  # one confirmation may answer an opt-out within this (FCC 64.1200(a)(12))
    reply_window_s: int = 15 * 60
    # a conversation whose user has not written for this long gives no consent, and its row is
    # removed (models/retention.py); 0: conversations never lapse. Opt-outs and opt-ins never do.
    conversation_horizon_days: int = 400
    # similarity
    shingle_size: int = 4
    num_perm: int = 128
    similarity_threshold: float = 0.6
    # how a send is compared with its sender's clusters: "containment" (the share of the shorter
    # text's shingles in the longer: padding and spun words cannot dilute it) or "jaccard"
    similarity_measure: str = "containment"
    # burst clusters
    free_recipients: int = 10
    burst_window_s: int = 10 * 60
    pace_interval_s: float = 60.0
    pace_growth_sends: float = 50.0  # the interval grows by pace_interval_s every this many paced sends
    max_delay_s: int = 6 * 3600
    cluster_idle_s: int = 24 * 3600
    max_clusters: int = 32
    # clusters kept across all the app's sender names (models/gate/burst.py WHOLE_APP): an app runs many
    # senders' templates at once (bench.detection's spread blasts: recall 94.7 % at 32, 98.7 % at 128)
    app_max_clusters: int = 128
    # risky senders
    young_sender_days: int = 90
    min_conversations: int = 3
    risky_free_recipients: int = 5
    risky_interval_factor: float = 2.0
    # junk
    junk_reject_reporters: int = 3
    max_junk_templates: int = 10_000
    # reputation (models/reputation.py): each signal multiplies a sender's score (0.05..1), the
    # deficit halves every reputation_half_life_s; the score scales the free allowance, and the
    # pacing intervals by its inverse
    reputation_junk_report: float = 0.5
    reputation_not_delivered: float = 0.9
    reputation_failed: float = 0.95
    reputation_paced_blast: float = 0.9  # per free_recipients paced sends of a blast's window
    reputation_delivered: float = 1.02
    reputation_conversation: float = 1.05
    reputation_half_life_s: int = 24 * 3600
    # event time (models/clock.py): how far an event's ts may run ahead of its record's timestamp
    # (beyond: dead-lettered), and trail it (beyond: decided at the bounded time)
    max_ts_ahead_s: int = 600
    max_ts_behind_s: int = 600
    # an unrestricted app is restricted again by sendgate when, within grant_revoke_window_s, its
    # senders get this many junk reports, or this many blast sends refused (burst_limit,
    # junk_similar), or at least grant_revoke_min_results delivery results of which this share
    # were not delivered
    grant_revoke_window_s: int = 24 * 3600
    grant_revoke_junk_reports: int = 5
    grant_revoke_refused_blasts: int = 20
    grant_revoke_min_results: int = 20
    grant_revoke_not_delivered_rate: float = 0.5
    # request controls (models/controls.py)
    # a send without `valid_for_s` is valid this long (s); 0: until it goes out
    default_valid_for_s: int = 0
    # per (app, userkey): at most `count` sends in any `window_s` seconds, as [[count, window_s], ...]
    # (e.g. [[3, 3600], [10, 86400]]); replies count but are never held back. Empty: no limit.
    recipient_limits: tuple[tuple[int, int], ...] = ()
    # auto-reply loop guard: replies to a userkey whose last `loop_repeats` + 1 or more inbound
    # messages were the same text within `loop_window_s` (and were answered) are delayed by
    # `loop_delay_s`; from `loop_reject_repeats` repeats on they are rejected
    loop_repeats: int = 3
    loop_window_s: int = 3600
    loop_delay_s: int = 300
    loop_reject_repeats: int = 10
    # a send whose (app, request_id) was answered within this long gets that answer again (no slot,
    # no delivery), and an inbound or consent event whose event_id was applied within it is not
    # applied again (models/memory.py); 0: nothing remembered, every event decided as new
    request_memory_s: int = 24 * 3600
    # a runaway job: at most `duplicate_text_limit` sends of the same text (as a reader sees it) to
    # one userkey within `duplicate_text_window_s`; more are refused (CHT's duplicate_limit: 5 in
    # ~30 min); replies are not counted (the loop guard watches them); 0: no limit
    duplicate_text_limit: int = 5
    duplicate_text_window_s: int = 1800
    # networks that deliver only to users who put the bot on their contact list (`contact` events;
    # an inbound on the network implies it), e.g. ["xmpp", "aim"]
    contact_list_networks: tuple[str, ...] = ()
    # compliance by kind of message (models/categories.py): a send without `category` is this kind
    default_category: str = "informational"
    # what a STOP stops: "all" (every kind but the one confirmation and HELP answers) or "category"
    # (the kind of the message it answers and those that need more consent; "stop all", or a STOP
    # answering no known message, stops all; CTIA and WhatsApp scope opt-outs so)
    opt_out_scope: str = "all"
    # quiet hours (models/quiet_hours.py): sends of these kinds reach a recipient only inside its
    # region's window, in its local time; `quiet_hours_windows` overrides and extends the default
    # windows, as [[region, window], ...], e.g. [["GB", "08:00-21:00"], ["US-TX", "Mon-Sat 09:00-21:00"]]
    quiet_hours_categories: tuple[str, ...] = ("promotional",)
    quiet_hours_windows: tuple[tuple[str, str], ...] = ()
    # at most this many promotional sends on one subject (a burst cluster of near-identical texts)
    # to one userkey within subject_window_s (Florida, Oklahoma, Maryland: 3 in 24 h); 0: no limit
    subject_limit: int = 3
    subject_window_s: int = 24 * 3600

    def __post_init__(self) -> None:
        positive_ints = (
            "reply_window_s",
            "opt_out_confirmation_s",
            "shingle_size",
            "num_perm",
            "burst_window_s",
            "max_delay_s",
            "cluster_idle_s",
            "max_clusters",
            "app_max_clusters",
            "young_sender_days",
            "junk_reject_reporters",
            "reputation_half_life_s",
            "max_junk_templates",
            "max_ts_ahead_s",
            "max_ts_behind_s",
            "loop_repeats",
            "loop_window_s",
            "loop_delay_s",
            "loop_reject_repeats",
            "grant_revoke_window_s",
            "grant_revoke_junk_reports",
            "grant_revoke_refused_blasts",
            "grant_revoke_min_results",
            "duplicate_text_window_s",
            "subject_window_s",
        )
        for name in positive_ints:
            value = getattr(self, name)
            if type(value) is not int or value <= 0:
                raise PolicyError(f"policy '{name}' must be a positive integer, got {value!r}")
        for name in (
            "free_recipients",
            "min_conversations",
            "risky_free_recipients",
            "conversation_horizon_days",
            "default_valid_for_s",
            "request_memory_s",
            "duplicate_text_limit",
            "subject_limit",
        ):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise PolicyError(f"policy '{name}' must be a non-negative integer, got {value!r}")
        for name in (
            "pace_interval_s",
            "pace_growth_sends",
            "risky_interval_factor",
            "reputation_junk_report",
            "reputation_not_delivered",
            "reputation_failed",
            "reputation_paced_blast",
            "reputation_delivered",
            "reputation_conversation",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise PolicyError(f"policy '{name}' must be a positive number, got {value!r}")
        for name in (
            "reputation_junk_report",
            "reputation_not_delivered",
            "reputation_failed",
            "reputation_paced_blast",
        ):
            if getattr(self, name) > 1:
                raise PolicyError(
                    f"policy '{name}' lowers a reputation: it must be in (0, 1], got {getattr(self, name)!r}"
                )
        for name in ("reputation_delivered", "reputation_conversation"):
            if getattr(self, name) < 1:
                raise PolicyError(
                    f"policy '{name}' raises a reputation: it must be at least 1, got {getattr(self, name)!r}"
                )
        for name in ("similarity_threshold", "grant_revoke_not_delivered_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise PolicyError(f"policy '{name}' must be in (0, 1], got {value!r}")
        for name in ("opt_out_keywords", "opt_in_keywords", "help_keywords"):
            words = getattr(self, name)
            if not isinstance(words, (list, tuple)) or not all(isinstance(w, str) and w.strip() for w in words):
                raise PolicyError(f"policy '{name}' must be a list of non-empty strings")
            object.__setattr__(self, name, tuple(w.strip().upper() for w in words))
        if set(self.opt_out_keywords) & set(self.opt_in_keywords):
            raise PolicyError("policy: a keyword cannot be both an opt-out and an opt-in keyword")
        locales = self.consent_locales
        if not isinstance(locales, (list, tuple)) or not locales or any(code not in LOCALES for code in locales):
            raise PolicyError(
                f"policy 'consent_locales' must be a non-empty list of {', '.join(sorted(LOCALES))}, got {locales!r}"
            )
        object.__setattr__(self, "consent_locales", tuple(locales))
        if self.default_valid_for_s > MAX_VALID_FOR_S:
            raise PolicyError(
                f"policy 'default_valid_for_s' must be at most {MAX_VALID_FOR_S} (0: none), "
                f"got {self.default_valid_for_s}"
            )
        if self.loop_reject_repeats <= self.loop_repeats:
            raise PolicyError(
                f"policy 'loop_reject_repeats' ({self.loop_reject_repeats}) must be more than "
                f"'loop_repeats' ({self.loop_repeats})"
            )
        if self.similarity_measure not in ("containment", "jaccard"):
            raise PolicyError(
                f"policy 'similarity_measure' must be containment or jaccard, got {self.similarity_measure!r}"
            )
        limits = self.recipient_limits
        if not isinstance(limits, (list, tuple)) or not all(
            isinstance(w, (list, tuple)) and len(w) == 2 and all(type(n) is int and n > 0 for n in w) for w in limits
        ):
            raise PolicyError(
                f"policy 'recipient_limits' must be a list of [count, window_s] pairs of positive "
                f"integers, got {limits!r:.80}"
            )
        object.__setattr__(self, "recipient_limits", tuple(sorted((c, w) for c, w in limits)))
        networks = self.contact_list_networks
        if not isinstance(networks, (list, tuple)) or not all(
            isinstance(n, str) and NETWORK_RE.match(n) for n in networks
        ):
            raise PolicyError(
                f"policy 'contact_list_networks' must be a list of network names ([a-z0-9_-]{{1,32}}), "
                f"got {networks!r:.80}"
            )
        object.__setattr__(self, "contact_list_networks", tuple(networks))
        if self.default_category not in CATEGORIES:
            raise PolicyError(
                f"policy 'default_category' must be one of {', '.join(CATEGORIES)}, got {self.default_category!r:.60}"
            )
        if self.opt_out_scope not in ("all", "category"):
            raise PolicyError(f"policy 'opt_out_scope' must be all or category, got {self.opt_out_scope!r:.60}")
        kinds = self.quiet_hours_categories
        if not isinstance(kinds, (list, tuple)) or any(k not in CATEGORIES for k in kinds):
            raise PolicyError(
                f"policy 'quiet_hours_categories' must be a list of {', '.join(CATEGORIES)}, got {kinds!r:.80}"
            )
        object.__setattr__(self, "quiet_hours_categories", tuple(kinds))
        windows = self.quiet_hours_windows
        if not isinstance(windows, (list, tuple)) or not all(
            isinstance(w, (list, tuple)) and len(w) == 2 and all(isinstance(x, str) for x in w) for w in windows
        ):
            raise PolicyError(
                f"policy 'quiet_hours_windows' must be a list of [region, window] pairs such as "
                f'["US-FL", "08:00-20:00"], got {windows!r:.80}'
            )
        object.__setattr__(self, "quiet_hours_windows", tuple((r, w) for r, w in windows))
        try:
            QuietHours(self.quiet_hours_windows)
        except QuietHoursError as exc:
            raise PolicyError(f"policy 'quiet_hours_windows': {exc}") from None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "Policy":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PolicyError(f"policy: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**fields)

    @classmethod
    def from_toml(cls, path: str) -> "Policy":
        data = load_toml(path, "policy file", PolicyError)
        # Sections ([consent], [burst], ...) are only for readability: keys are flat and unique.
        flat: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, dict):
                flat.update(value)
            else:
                flat[key] = value
        try:
            return cls.from_mapping(flat)
        except PolicyError as exc:
            raise PolicyError(f"policy file {path}: {exc}") from None

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
