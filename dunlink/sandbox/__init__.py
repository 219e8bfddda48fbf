"""The sandbox platform (``dunlink sandbox``): the contract's order API, faults and signed IPNs."""
