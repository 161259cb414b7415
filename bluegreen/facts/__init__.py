"""Host scripts beside their parsers (pyinfra's facts are the model).

Each module builds the shell for one family of host scripts from plain values (every value
quoted where it is placed) and, in the same module, reads what the script prints and
decides what its exit codes and markers mean: a typed result, or the :class:`BgError`
raised with its message, decided once. ``ops/`` runs these scripts and acts on the
results; it writes no shell and matches no marker itself (``tests/test_arch.py``).

Every script that prints more than one thing uses one stdout protocol,
:mod:`bluegreen.facts.sections`.
"""
