"""Pure domain types and rules: money, rates, subsidy split, allocation state. No I/O."""
