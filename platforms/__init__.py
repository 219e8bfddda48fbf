"""One package per checkout platform: how its webhooks are verified, how their fields become domain events,
and how its API is called. Each imports the standard library, ``domain`` and the platform error tree only, so
a platform can be read, tested and replaced on its own.
"""
