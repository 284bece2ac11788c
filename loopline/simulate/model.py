"""The generative model behind the simulated company, with its documented truths.

Churn (a cancellation) follows a daily hazard, logistic in a few drivers:

    eta = b0 + b_z * engagement + b_fail * failed_payment_in_last_30d
          + b_ticket * ticket_in_last_30d + b_price * (price_usd - 12) / 5
          + b_tenure * log1p(tenure_days / 30)
    hazard = sigmoid(eta)                  # probability of cancelling the next day

`engagement` is latent: a per-user level plus an AR(1) wander. The company never sees
it; it sees viewing (Poisson sessions whose rate grows with engagement), payments and
tickets. The true probability of churn within 30 days after an as-of day is
`1 - (1 - hazard)^30`, evaluated on the state at the end of that day; its ROC AUC
against the realised labels is the reference ("Bayes") AUC a model on observable data
can approach but should not beat. A concept shift changes the coefficients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GENRES = (
    "drama", "comedy", "thriller", "documentary", "sci-fi", "romance",
    "animation", "crime", "horror", "reality", "fantasy", "kids",
)  # fmt: skip

COUNTRIES = ("US", "GB", "DE", "FR", "BR", "JP", "IN", "CA")
COUNTRY_WEIGHTS = np.array([0.32, 0.12, 0.12, 0.08, 0.12, 0.06, 0.10, 0.08])
CURRENCY = {
    "US": "USD",
    "GB": "GBP",
    "DE": "EUR",
    "FR": "EUR",
    "BR": "BRL",
    "JP": "JPY",
    "IN": "INR",
    "CA": "CAD",
}
# units of local currency per USD, and the minor-unit exponent (JPY has none)
FX_PER_USD = {
    "USD": 1.0,
    "GBP": 0.79,
    "EUR": 0.92,
    "BRL": 5.0,
    "JPY": 150.0,
    "INR": 83.0,
    "CAD": 1.37,
}
MINOR_EXPONENT = {"USD": 2, "GBP": 2, "EUR": 2, "BRL": 2, "JPY": 0, "INR": 2, "CAD": 2}
# fixed offsets (no DST) in minutes: devices stamp local time
UTC_OFFSET_MIN = {
    "US": -300,
    "GB": 0,
    "DE": 60,
    "FR": 60,
    "BR": -180,
    "JP": 540,
    "IN": 330,
    "CA": -300,
}

CHANNELS = ("organic", "paid_search", "social", "referral", "partner")
CHANNEL_WEIGHTS = np.array([0.35, 0.25, 0.2, 0.12, 0.08])
DEVICES = ("tv", "mobile", "web", "tablet")
DEVICE_WEIGHTS = np.array([0.45, 0.30, 0.17, 0.08])
DEVICE_WEIGHTS_SHIFTED = np.array([0.20, 0.60, 0.12, 0.08])  # the device-mix drift scenario
OS_BY_DEVICE = {
    "tv": ("tizen", "webos", "androidtv"),
    "mobile": ("ios", "android"),
    "web": ("chrome", "safari", "firefox"),
    "tablet": ("ipados", "android"),
}
NETWORKS = ("wifi", "cellular", "ethernet")

# plans: id, name, price in USD, streams
PLANS = ((1, "basic", 7.99, 1), (2, "standard", 12.99, 2), (3, "premium", 17.99, 4))
PLAN_WEIGHTS = np.array([0.35, 0.45, 0.20])
PRICE_RISE = 1.2  # the price-rise drift scenario

# latent engagement = a lasting part (mu) + a wandering part: an AR(1) whose stationary
# spread every user starts at, so the population does not widen over the first months
ENGAGEMENT_SD = 0.9
WANDER_DECAY = 0.95
WANDER_STEP = 0.2
WANDER_SD = WANDER_STEP / float(np.sqrt(1.0 - WANDER_DECAY**2))

# the catalogue and what is watched. A calm company is stationary in viewing too, so the
# mix a user watches must not follow the catalogue's luck: a session is a film with a fixed
# probability (films run 85-135 min, episodes 25 or 50), and only then is a title of the
# user's genre and that kind chosen by popularity. A new release is watched RELEASE_BOOST
# times more at first, fading over BOOST_DAYS; a show is offered for LICENCE_DAYS after its
# release, and releases arrive at the pace that keeps the offered catalogue the same size
# (the start's catalogue was released at that pace over the LICENCE_DAYS before it).
MOVIE_SHARE = 0.25
RELEASE_BOOST = 1.0
BOOST_DAYS = 30.0
LICENCE_DAYS = 400

TICKET_CATEGORIES = ("billing", "playback", "account", "content", "cancellation")


@dataclass(frozen=True)
class HazardCoefficients:
    """Coefficients of the daily churn hazard (see the module docstring)."""

    b0: float = -6.3
    engagement: float = -1.4
    failed_payment: float = 2.0
    ticket: float = 0.9
    price: float = 0.5
    tenure: float = -0.25


BASE_COEFFICIENTS = HazardCoefficients()
# after a concept shift engagement matters less, price and tickets more
SHIFTED_COEFFICIENTS = HazardCoefficients(engagement=-0.4, price=1.5, ticket=1.6, b0=-5.6)

LABEL_WINDOW_DAYS = 30


def churn_eta(
    coef: HazardCoefficients,
    engagement: np.ndarray,
    failed_recent: np.ndarray,
    ticket_recent: np.ndarray,
    price_usd: np.ndarray,
    tenure_days: np.ndarray,
) -> np.ndarray:
    """The logit of the daily cancellation hazard."""
    return (
        coef.b0
        + coef.engagement * engagement
        + coef.failed_payment * failed_recent
        + coef.ticket * ticket_recent
        + coef.price * (price_usd - 12.0) / 5.0
        + coef.tenure * np.log1p(np.maximum(tenure_days, 0) / 30.0)
    )


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def churn_probability_30d(eta: np.ndarray) -> np.ndarray:
    """True probability of cancelling within the label window, from the daily hazard."""
    return 1.0 - (1.0 - sigmoid(eta)) ** LABEL_WINDOW_DAYS


# -- support-ticket text -------------------------------------------------------------
# Each category has its own vocabulary, so a category can be derived from the text.
TICKET_OPENERS = ("Hi,", "Hello support,", "Hey there,", "Good morning,", "Hi team,", "")
TICKET_CLOSERS = ("Thanks.", "Please help.", "Regards", "Thank you!", "Cheers", "")
TICKET_TEMPLATES = {
    "billing": (
        "I was charged twice this month for my {plan} plan.",
        "My card payment was declined but my bank says the card is fine.",
        "Why is there a charge of {amount} on my statement? I want a refund.",
        "The invoice amount is wrong, please check my billing.",
    ),
    "playback": (
        "The video keeps buffering on my {device} even on a fast connection.",
        "The app crashes every time I press play on {show}.",
        "No sound when streaming episodes, the picture freezes too.",
        "Playback stops after a few minutes with an error code.",
    ),
    "account": (
        "I can't log in, the password reset email never arrives.",
        "Please change the email address on my account.",
        "Someone else is using my account from another country.",
        "How do I add another profile to my login?",
    ),
    "content": (
        "When will the next season of {show} be available?",
        "Please add more {genre} titles, the catalogue feels small.",
        "Subtitles are missing for {show}.",
        "Is {show} leaving the service? I was halfway through.",
    ),
    "cancellation": (
        "How do I cancel my subscription?",
        "It's too expensive now, I am thinking of leaving. Cancel at the end of the month.",
        "I want to cancel, I don't watch anything anymore.",
        "Please close my account and stop the subscription.",
    ),
}
