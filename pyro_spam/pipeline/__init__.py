"""The commands: ``run``/``resume`` (:mod:`.run`), ``diagnose`` (:mod:`.diagnose`) and ``compare``
(:mod:`.compare`), built from :mod:`.stages` (thin adapters from the run context to a domain call,
its files and one section of ``summary.json``) over the :class:`~.context.RunContext`.

Only :mod:`pyro_spam.cli` and the top-level :func:`pyro_spam.run` (imported lazily) use this package.
"""
