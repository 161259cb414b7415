"""Real parts to rehearse and test against: a private nginx and simulated hosts."""
