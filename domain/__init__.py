"""The dunning domain: money, installment plans, replacement plans and the dunning case.

Standard library only: nothing here performs I/O or imports infrastructure, so every rule about what a
buyer owes and what dunlink may do next can be tested in microseconds.
"""
