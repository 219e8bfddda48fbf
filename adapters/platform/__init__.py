"""The checkout platform's order API: the port, its HTTP client and an in-memory stand-in.

The package exports what the port exports (the orders, the port and the error tree it raises), so that list
of names is kept in one place, ``adapters.platform.port.__all__``.
"""

from adapters.platform.port import *  # noqa: F403
from adapters.platform.port import __all__ as __all__
