"""``dunlink soak``: the whole pipeline under load and faults, then checked from the outside.

It starts every real process (sandbox, webhook app, several workers, beat), a mail catcher, a Redis of its
own and a throwaway PostgreSQL database; fails N installments across several vendors while the sandbox
injects errors, timeouts and rate limits; re-delivers some IPNs byte for byte; races ``payment.made``
against the pipeline; pays some replacements once their link arrived; SIGKILLs workers and restarts them;
restarts Redis once. Then it judges the result from what the platform and the mail server recorded, not from
dunlink's own tables, because a pipeline that lost or doubled an effect would also misreport it. Only the
"nothing stuck" check reads the database, since a case's state is not visible anywhere else.
"""

from dunlink.devtools.soak.checks import check
from dunlink.devtools.soak.command import register, run_soak
from dunlink.devtools.soak.model import CHECK_NAMES, Check, Plan, Records, SoakOptions, SoakOrder

__all__ = ["CHECK_NAMES", "Check", "Plan", "Records", "SoakOptions", "SoakOrder", "check", "register", "run_soak"]
