"""The simulator and planner: replay GPU cluster traces through the same scheduler code the live
controller uses, on a cluster the user describes, and see waits, utilisation, fairness and how
fast the subsidy fund is spent."""
