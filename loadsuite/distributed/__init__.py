"""What a distributed run (master and workers) adds: every worker's last report on the master before anything reads it."""
