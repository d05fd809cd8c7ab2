"""Unlearning objectives as a registry: name -> :class:`~cu_cli.erase.objectives.base.Objective`
subclass (its kind, needs, options, reference defaults, paper URL). Importing it loads no torch."""

from cu_cli.erase.objectives.conabl import ConAbl
from cu_cli.erase.objectives.erasediff import EraseDiff
from cu_cli.erase.objectives.esd import ESD
from cu_cli.erase.objectives.uce import UCE

ERASE_OBJECTIVES = {cls.name: cls for cls in (ConAbl, ESD, EraseDiff, UCE)}
