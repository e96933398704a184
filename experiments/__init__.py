"""Config-driven experiments built on gumbax: tasks, runner and reporting."""
