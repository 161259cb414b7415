"""Host scripts beside their parsers (pyinfra's facts are the model).

Each module builds the shell for one family of host scripts from plain values (every value
quoted where it is placed) and, in the same module, reads what the script prints and
decides what its exit codes and markers mean: a typed result, or the :class:`BgError`
raised with its message, decided once. ``ops/`` runs these scripts and acts on the
results; it writes no shell and matches no marker itself (``tests/test_arch.py``).

The families: ``observe`` (what a host has, read under the lock), ``check`` with
``listeners`` and ``checkmaster`` (`bg check`), ``upstream`` (the switch's stage, commit,
abort), ``drain`` (nginx's master, reload, old workers), ``retire`` (the old slot's stop
after the drain), ``hooks``. Scripts that print named parts use one stdout protocol,
:mod:`bluegreen.facts.sections`; golden outputs captured on a real nginx
(``tests/golden_capture.py``) drive the parser tests.
"""
