"""`bg rehearse`: a real deploy cycle under load on a Vagrant VM, a sandbox of hosts, or here.

Modules: ``envs`` (where: local, sandbox, vagrant, and the automatic choice), ``apps`` (what:
the sample, the Elixir sample, or the user's artifacts and config), ``run`` (the sequence under
load), ``tally`` (what the load saw per step), ``cleanup`` (on every exit, SIGTERM included),
``report`` (table, JSON, plot), ``command`` (the Typer command).
"""
