"""`make bench`: performance scenarios reporting JSON results and ratios measured in one run."""
