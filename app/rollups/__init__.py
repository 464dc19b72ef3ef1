"""Derived state of the telemetry and the swaps: battery_daily, battery_monthly.

rules.py defines every aggregate column once, as data (how it merges, how a month sums it,
the consecutive-sample terms); daily.py and monthly.py generate the SQL the ingest, the
swap roll-up, the rebuild and the reports run from those definitions.
"""
