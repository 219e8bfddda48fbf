"""dunlink's own rooms beside the design card's folders (``domain``, ``adapters``, ``platforms``, ``workers``,
``templates``): the use cases, the configuration, the wiring, the HTTP app, the CLI, and the rehearsal programs
(the sandbox and the dev tools), under one installed name that nothing else on PyPI can claim."""
