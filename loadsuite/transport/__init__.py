"""How the suite talks HTTP: the users' bounded answer bodies (both Locust clients), headers, and the one client outside Locust's request path."""
