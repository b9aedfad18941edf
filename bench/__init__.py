"""`python -m bench`: our pipeline against in-run baselines on the same servers, reported as ratios."""
