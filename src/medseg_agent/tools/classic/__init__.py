"""The embedded default tool: interactive segmentation from a box and clicks, no weights, no GPU.

One job per module: ``frame`` (working frame and region of interest), ``seeds`` (trimaps from the
box, the clicks and the previous mask), ``grabcut``, ``watershed``, ``random_walker`` (the
algorithms), ``boxmodel`` (grey-level models fitted in a box, for small and faint targets), ``snap``
(contours halfway between the grey levels inside and outside), ``parts`` (the look-alike parts of a
clicked separate part), ``output`` (mask, logits and score), ``tool`` (which algorithm runs when).
Why the default is what it is, with the measurements: docs/tools.md.
"""

from medseg_agent.tools.classic.tool import METHODS, ClassicTool, build_classic_tool

__all__ = ["METHODS", "ClassicTool", "build_classic_tool"]
