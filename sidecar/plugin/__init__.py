"""Plugin authoring, what `hyperfilter plugin` runs: new, build, check, test, run."""
