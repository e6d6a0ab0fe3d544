"""The expert's default options in one place (no heavy imports: the CLI's --help shows them).

delta, epsilon, tau and first_min_iou were chosen by measurement on the demo data with the classic
tool (``benchmarks/expert_vs_baselines.py --sweep``; table and reasoning in docs/trajectories.md).
"""

from __future__ import annotations

MODES = ("hybrid", "clicks")
DELTA = 0.1  # a correction is kept at once when it raises IoU by at least this
EPSILON = 0.01  # below this gain for the best candidate, the expert stops
TAU = {"hybrid": 0.9, "clicks": 0.8}  # stop when IoU reaches this (clicks: IBISAgent's 0.8)
#: The first action starts the mask: a box or point reaching less IoU than this is redrawn or
#: replaced by the next candidate (a 5 % box is no start a human keeps, though it beats an empty mask).
FIRST_MIN_IOU = 0.5
MAX_TRIES = 3  # candidate actions tried per turn
BOX_JITTER = 0.1  # each box side moves by up to this fraction of the box size (+1 pixel)
OTHER_SHARE = 0.2  # share of episodes that start with the other strategy than the rule's
BOX_REDRAW_FRACTION = 0.1  # redraw the box when this share of the target lies outside it
#: Turn limits of the two published recipes: MedSAM-Agent (5 interactions), IBISAgent (20 clicks).
MAX_TURNS = {"hybrid": 5, "clicks": 20}
