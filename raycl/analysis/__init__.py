"""Pure analysis of sweep results: Pareto fronts, hypervolumes and scaling-law fits."""
