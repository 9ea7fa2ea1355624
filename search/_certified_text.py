"""What the command line prints about a certified answer: the certificate in words, or why nothing passed."""

from __future__ import annotations

from .certify import BOUNDS
from .pareto_testing import CertifiedAnswer

__all__ = ["drop_title", "budget_title", "budget_failure", "cost_above_bound_note"]

# Said under every certificate: the guarantee is for this one run (docs/certification.md).
ONE_RUN = (
    "  one run, one certificate: rerunning with other seeds or risk levels and keeping the best answer voids "
    "it"
)


def _calibration_words(roles) -> str:
    if roles.fraction is None:
        where = "the cache's calibration split"
    elif (
        roles.fit_is_given
    ):  # the methods fitted on a subsample: calibration rows drawn from the rest
        where = (
            f"{roles.fraction:.0%} of the search split, drawn with seed {roles.seed} from the rows outside "
            "the fitted subsample"
        )
    else:
        where = f"{roles.fraction:.0%} of the search split, cut with seed {roles.seed}"
    return f"{roles.calibration.n_samples:,} calibration samples ({where})"


def drop_title(answer: CertifiedAnswer, points: float, delta: float) -> str:
    """The heading of a certified --max-drop answer (``points`` as asked), or the one line saying nothing passed."""
    c = answer.certificate
    if c is None:
        smallest = (
            "-"
            if answer.smallest_certifiable is None
            else f"{100 * answer.smallest_certifiable:.3f}"
        )
        need = (
            "no calibration size would (no configuration drops less than that on calibration)"
            if answer.samples_needed is None
            else f"about {answer.samples_needed:,} calibration samples would certify {points} points"
        )
        return (
            f"\ncertified: nothing cheaper than the base model is certified within {points} points at "
            f"delta {delta:g} on {_calibration_words(answer.roles)}: the smallest drop certifiable here is "
            f"{smallest} points; {need}"
        )
    return (
        f"\ncertified: cheapest within {points} points of the base accuracy, with confidence "
        f"{1 - delta:.0%}\n  drop <= {points} points certified at delta {delta:g} on "
        f"{_calibration_words(answer.roles)} by the {BOUNDS[c.bound].title}; observed drop there "
        f"{100 * c.observed:.3f} points (p = {c.p_value:.3g}); {c.tested} of {c.sequence} configurations of the "
        "sequence tested\n" + ONE_RUN
    )


def budget_title(answer: CertifiedAnswer, budget: float, delta: float) -> str:
    """The heading of a certified --budget answer."""
    c = answer.certificate
    if c is None:
        raise ValueError(
            "budget_title: the answer holds no certificate (budget_failure words that case)"
        )
    return (
        f"\ncertified: most accurate within relative cost {budget}, with confidence {1 - delta:.0%}\n"
        f"  mean relative cost <= {budget} certified at delta {delta:g} on {_calibration_words(answer.roles)} "
        f"by betting (Waudby-Smith-Ramdas) on per-sample cost; observed there {c.observed:.4f}; accuracy >= "
        f"{c.accuracy_lower_bound:.3%} (confidence {1 - delta:.0%}, simultaneous over the {c.sequence} "
        f"configurations of the sequence)\n  the cost and accuracy bounds hold jointly with confidence "
        f"{1 - 2 * delta:.0%} (1 - 2 delta)\n" + ONE_RUN
    )


def budget_failure(answer: CertifiedAnswer, budget: float, delta: float) -> str:
    """The one-line error when nothing within ``budget`` is certified."""
    least = (
        ""
        if answer.smallest_certifiable is None
        else (
            f"; the lowest mean relative cost certifiable here is {answer.smallest_certifiable:.4f}"
        )
    )
    return (
        f"no configuration is certified within relative cost {budget} at delta {delta:g} on "
        f"{_calibration_words(answer.roles)}{least}"
    )


def cost_above_bound_note(split: str, cost: float, budget: float) -> str:
    """Why a measured relative cost above a certified budget does not contradict the certificate."""
    return (
        f"  note: the {split} relative cost {cost:.4f} is above the certified {budget}: the certificate bounds the "
        "expected cost over data drawn like the calibration samples, not the mean of one finite sample"
    )
