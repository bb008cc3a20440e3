"""Distribution: the one policy compiled into each agent's own configuration (Roo Code, Claude
Code, Cline) for one person, and the check that an installed file still matches it. Pure
functions over the effective policy; the surfaces make the key and write the files.
"""

from __future__ import annotations

from collections.abc import Callable

from corral.clients.claude_code import compile_claude_code
from corral.clients.cline import compile_cline
from corral.clients.compile import Compiled, Target
from corral.clients.roo import compile_roo

COMPILERS: dict[str, Callable[[Target], Compiled]] = {
    "roo": compile_roo, "claude-code": compile_claude_code, "cline": compile_cline}


def compile_client(target: Target) -> Compiled:
    """The files `target.client` needs, and what it cannot express."""
    return COMPILERS[target.client](target)
