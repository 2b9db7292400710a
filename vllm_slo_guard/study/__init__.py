"""Multi-seed comparison of searchers: scenarios, oracle, statistics, figures."""
